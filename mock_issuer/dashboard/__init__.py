"""`/dashboard`: usage charts, cost estimate and machine management for this issuer.

Sign in once with the instance secret key; every page action calls the same service functions
as the Backend API routes (`machines`, `tokens`, `usage`), with the same validators, so the
dashboard can do nothing the API would refuse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from .. import db, machines, oauth_clients, tokens, usage
from ..config import Settings, current_settings
from ..db import get_conn
from ..errors import ClerkError, invalid_param
from ..requests_util import as_int, as_str
from ..usage import counts_since
from . import auth, throttle
from .charts import render_stacked_bars
from .pricing import (
    PROJECTION_WINDOW_DAYS,
    Prices,
    billable_counts,
    estimate,
    format_usd,
    month_bounds,
)
from .usage_view import (
    RANGES,
    SPLITS,
    by_format,
    by_machine,
    format_breakdown,
    machine_breakdown,
    top_machine_ids,
    totals_of,
)

log = logging.getLogger("mock_issuer")

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

PUBLIC_ENDPOINTS = {"dashboard.sign_in", "dashboard.static"}
TOKENS_PER_PAGE = 20
MACHINES_PER_PAGE = 50
SCOPE_CANDIDATES_LIMIT = 500
# A rotation keeps the old key working an hour unless told otherwise, so callers can pick up
# the new key without failing (0 retires it at once).
DEFAULT_PREVIOUS_TOKEN_TTL = 3600
MAX_OFFSET = 10**9  # the API's bound too: SQLite takes 64-bit integers only
REVOKED_FROM_DASHBOARD = "Revoked from the dashboard"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:;"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def init_app(app: Flask) -> None:
    """Register the dashboard: cookie signing key and flags, the blueprint."""
    settings: Settings = app.extensions["settings"]
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = auth.session_secret(
            settings.clerk_secret_key, settings.mock_issuer_session_secret
        )
    app.config.update(
        SESSION_COOKIE_NAME="mock_issuer_dashboard",
        SESSION_COOKIE_PATH="/dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.mock_issuer_url.startswith("https://"),
    )
    app.register_blueprint(bp)


# ---- request guards, headers, errors, template helpers ----


@bp.before_request
def _guard() -> Response | None:
    """Anonymous visitors go to the sign-in page; every POST must carry the CSRF token."""
    if request.endpoint not in PUBLIC_ENDPOINTS and not auth.is_signed_in():
        if request.method == "GET":
            return redirect(url_for("dashboard.sign_in", next=request.full_path.rstrip("?")))
        flash("Your session has ended: sign in again.", "error")
        return redirect(url_for("dashboard.sign_in"), 303)
    auth.check_csrf()
    return None


@bp.after_request
def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def error_page(code: int, name: str, description: str) -> Response:
    """The dashboard's HTML error page, with its security headers (errors.py answers every error
    under /dashboard with it; a routing error happens outside the blueprint, so the template
    helpers are passed explicitly and the blueprint's after_request may not run)."""
    html = render_template(
        "dashboard/error.html",
        code=code,
        name=name,
        description=description,
        **_template_helpers(),
    )
    return _security_headers(Response(html, status=code, mimetype="text/html"))


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {"signed_in": auth.is_signed_in(), "csrf_token": auth.csrf_token}


@bp.app_template_filter("usd")
def _usd(amount) -> str:
    return format_usd(amount)


@bp.app_template_filter("ms_time")
def _ms_time(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _back_to_machine(machine_id: str) -> Response:
    return redirect(url_for("dashboard.machine", machine_id=machine_id), 303)


def _act(action: Callable[[], str], back: Callable[[], Response]) -> Response:
    """Run a service call; flash its success message or the API's own error; redirect back."""
    try:
        flash(action(), "ok")
    except ClerkError as err:
        flash(err.long_message, "error")
    return back()


def _offset() -> int:
    """The `offset` query parameter clamped to 0..MAX_OFFSET (not a number: 0)."""
    offset = request.args.get("offset", 0, type=int) or 0
    return min(max(offset, 0), MAX_OFFSET)


def _form_int(name: str) -> int:
    """A whole number from a form field, or the API's error for that field."""
    raw = request.form.get(name, "").strip()
    try:
        return int(raw)
    except ValueError:
        raise invalid_param(name, "must be a whole number") from None


# ---- sign in and out ----


@bp.get("/")
def index() -> Response:
    return redirect(url_for("dashboard.usage"))


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    target = auth.safe_next(
        request.values.get("next"), url_for("dashboard.usage")
    )  # only paths inside /dashboard
    if request.method == "GET":
        if auth.is_signed_in():
            return redirect(target)
        return render_template("dashboard/sign_in.html", next=target, error=None)
    client = request.remote_addr or "unknown"
    wait = throttle.retry_after(get_conn(), client)
    if wait is not None:
        error = f"Too many wrong keys from your address: try again in {wait} s."
        page = render_template("dashboard/sign_in.html", next=target, error=error)
        return page, 429, {"Retry-After": str(wait)}
    submitted = request.form.get("secret_key", "")
    if auth.secret_key_matches(submitted, current_settings().clerk_secret_key):
        throttle.forget(get_conn(), client)
        auth.sign_in()
        return redirect(target, 303)
    throttle.record_failure(get_conn(), client)
    log.warning("dashboard sign-in refused from %s: wrong instance secret key", request.remote_addr)
    error = "That is not this issuer's instance secret key."
    return render_template("dashboard/sign_in.html", next=target, error=error), 401


@bp.post("/sign-out")
def sign_out() -> Response:
    auth.sign_out()
    flash("Signed out.", "ok")
    return redirect(url_for("dashboard.sign_in"), 303)


# ---- usage ----


@bp.get("/usage", endpoint="usage")
def usage_page() -> Any:
    range_key = request.args.get("range") or "day"
    split = request.args.get("split") or "format"
    if range_key not in RANGES:
        abort(400, description=f"Unknown range {range_key!r}: use one of {', '.join(RANGES)}.")
    if split not in SPLITS:
        abort(400, description=f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    time_range = RANGES[range_key]
    conn = get_conn()
    now = db.now_ms()
    report = usage.usage_report(conn, range_key, bucket_seconds=time_range.bucket_seconds, now=now)
    names = _machine_names(conn, [m["machine_id"] for m in report["machines"]])
    if split == "format":
        charts = by_format(report, time_range)
    else:
        machine_reports = [
            usage.usage_report(
                conn, range_key, machine_id=mid, bucket_seconds=time_range.bucket_seconds, now=now
            )
            for mid in top_machine_ids(report)
        ]
        charts = by_machine(report, machine_reports, names, time_range)
    now_dt = datetime.fromtimestamp(now / 1000, UTC)
    month_start = int(month_bounds(now_dt)[0].timestamp() * 1000)
    month_to_date = billable_counts(counts_since(conn, month_start))
    trailing = billable_counts(counts_since(conn, now - PROJECTION_WINDOW_DAYS * 86_400_000))
    prices = Prices.of(current_settings())
    return render_template(
        "dashboard/usage.html",
        nav="usage",
        ranges=[(r.key, r.label) for r in RANGES.values()],
        splits=list(SPLITS.items()),
        range_key=range_key,
        range_label=time_range.label,
        split=split,
        creations_chart=charts.creations,
        creations_svg=render_stacked_bars(charts.creations),
        verifications_chart=charts.verifications,
        verifications_svg=render_stacked_bars(charts.verifications),
        totals=totals_of(report["totals"]),
        format_rows=format_breakdown(report),
        machine_rows=machine_breakdown(report, names),
        cost=estimate(month_to_date, trailing, prices, now_dt),
        projection_window_days=PROJECTION_WINDOW_DAYS,
        free_tiers=(prices.free_creations, prices.free_verifications),
    )


def _machine_names(conn, machine_ids: list[str | None]) -> dict[str, str]:
    """Name of each machine id; a deleted machine is shown by its id."""
    names = {}
    for mid in filter(None, machine_ids):
        try:
            names[mid] = machines.get_machine(conn, mid).name
        except ClerkError:
            names[mid] = f"{mid} (deleted)"
    return names


# ---- machines ----


@bp.get("/machines", endpoint="machines")
def machines_page() -> Any:
    query = request.args.get("query", "").strip()
    offset = _offset()
    page, total = machines.list_machines(
        get_conn(), limit=MACHINES_PER_PAGE, offset=offset, query=query or None, order_by="name"
    )
    return render_template(
        "dashboard/machines.html",
        nav="machines",
        machines=page,
        total_count=total,
        query=query,
        prev_offset=max(0, offset - MACHINES_PER_PAGE) if offset > 0 else None,
        next_offset=offset + MACHINES_PER_PAGE if offset + MACHINES_PER_PAGE < total else None,
    )


@bp.post("/machines")
def create_machine() -> Any:
    try:
        name = machines.validate_name(request.form.get("name", "").strip())
        ttl = machines.validate_default_token_ttl(_form_int("default_token_ttl"))
        machine, secret_key = machines.create_machine(get_conn(), name, default_token_ttl=ttl)
    except ClerkError as err:
        flash(err.long_message, "error")
        return redirect(url_for("dashboard.machines"), 303)
    flash(f"Machine {machine.name} created.", "ok")
    auth.stash_revealed(machine.id, "Secret key of the new machine", secret_key)
    return _back_to_machine(machine.id)


@bp.get("/machines/<machine_id>")
def machine(machine_id: str) -> Any:
    conn = get_conn()
    current = machines.get_machine(conn, machine_id)
    revealed = auth.pop_revealed(machine_id)
    show_all = request.args.get("all") == "1"
    offset = _offset()
    page, total = tokens.list_tokens(
        conn,
        machine_id,
        include_revoked=show_all,
        include_expired=show_all,
        limit=TOKENS_PER_PAGE,
        offset=offset,
    )
    everyone, _ = machines.list_machines(conn, limit=SCOPE_CANDIDATES_LIMIT, order_by="name")
    scoped = {m.id for m in current.scoped_machines}
    return render_template(
        "dashboard/machine.html",
        nav="machines",
        machine=current,
        scope_candidates=[m for m in everyone if m.id != machine_id and m.id not in scoped],
        tokens=page,
        tokens_total=total,
        show_all=show_all,
        prev_offset=max(0, offset - TOKENS_PER_PAGE) if offset > 0 else None,
        next_offset=offset + TOKENS_PER_PAGE if offset + TOKENS_PER_PAGE < total else None,
        revealed_title=revealed[0] if revealed else None,
        revealed_secret=revealed[1] if revealed else None,
        default_previous_token_ttl=DEFAULT_PREVIOUS_TOKEN_TTL,
        oauth_token_format=oauth_clients.token_format(conn, machine_id),
        oauth_token_formats=oauth_clients.TOKEN_FORMATS,
    )


@bp.post("/machines/<machine_id>")
def update_machine(machine_id: str) -> Response:
    def action() -> str:
        name = machines.validate_name(request.form.get("name", "").strip())
        ttl = machines.validate_default_token_ttl(_form_int("default_token_ttl"))
        machines.update_machine(get_conn(), machine_id, name=name, default_token_ttl=ttl)
        return "Settings saved."

    return _act(action, lambda: _back_to_machine(machine_id))


@bp.post("/machines/<machine_id>/oauth-client")
def update_oauth_client(machine_id: str) -> Response:
    def action() -> str:
        value = oauth_clients.set_token_format(
            get_conn(), machine_id, request.form.get(oauth_clients.FIELD, "")
        )
        return f"The OAuth token endpoint now issues this machine {value} access tokens."

    return _act(action, lambda: _back_to_machine(machine_id))


@bp.post("/machines/<machine_id>/secret-key")
def reveal_secret_key(machine_id: str) -> Any:
    secret = machines.get_secret_key(get_conn(), machine_id)
    auth.stash_revealed(machine_id, "Secret key", secret)
    return _back_to_machine(machine_id)


@bp.post("/machines/<machine_id>/secret-key/rotate")
def rotate_secret_key(machine_id: str) -> Any:
    try:
        previous_ttl = as_int(
            "previous_token_ttl",
            _form_int("previous_token_ttl"),
            0,
            machines.MAX_PREVIOUS_TOKEN_TTL,
        )
        secret = machines.rotate_secret_key(get_conn(), machine_id, previous_ttl)
    except ClerkError as err:
        if err.code == "machine_not_found":
            raise
        flash(err.long_message, "error")
        return _back_to_machine(machine_id)
    if previous_ttl:
        flash(
            f"Secret key rotated. The previous key keeps working for {previous_ttl} seconds.", "ok"
        )
    else:
        flash("Secret key rotated. The previous key stopped working at once.", "ok")
    auth.stash_revealed(machine_id, "New secret key", secret)
    return _back_to_machine(machine_id)


@bp.post("/machines/<machine_id>/scopes")
def add_scope(machine_id: str) -> Response:
    def action() -> str:
        to_id = as_str("to_machine_id", request.form.get("to_machine_id", ""), max_len=64)
        machines.add_scope(get_conn(), machine_id, to_id)
        return f"This machine may now send to {machines.get_machine(get_conn(), to_id).name}."

    return _act(action, lambda: _back_to_machine(machine_id))


@bp.post("/machines/<machine_id>/scopes/<other_id>/delete")
def remove_scope(machine_id: str, other_id: str) -> Response:
    def action() -> str:
        machines.remove_scope(get_conn(), machine_id, other_id)
        return "Scope removed."

    return _act(action, lambda: _back_to_machine(machine_id))


@bp.post("/machines/<machine_id>/tokens/<token_id>/revoke")
def revoke_token(machine_id: str, token_id: str) -> Response:
    def action() -> str:
        tokens.revoke_token(
            get_conn(),
            token_id,
            revocation_reason=REVOKED_FROM_DASHBOARD,
            owner_machine_id=machine_id,
        )
        return f"Token {token_id} revoked."

    return _act(action, lambda: _back_to_machine(machine_id))


@bp.post("/machines/<machine_id>/delete")
def delete_machine(machine_id: str) -> Response:
    conn = get_conn()
    current = machines.get_machine(conn, machine_id)
    if request.form.get("confirm_name", "") != current.name:
        flash("The name you typed does not match: the machine was not deleted.", "error")
        return _back_to_machine(machine_id)
    machines.delete_machine(conn, machine_id)
    flash(f"Machine {current.name} deleted.", "ok")
    return redirect(url_for("dashboard.machines"), 303)
