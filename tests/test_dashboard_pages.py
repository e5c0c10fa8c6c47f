"""Every dashboard page and form through Flask's test client: sign-in, session, CSRF, usage,
machines, scopes, secret keys, tokens, and /metrics. Page actions are checked against the API."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mock_issuer import db, machines, metrics
from mock_issuer.dashboard.auth import SESSION_MAX_AGE_SECONDS
from mock_issuer.dashboard.pricing import days_in_month, format_usd
from tests.seed import CALLER, OUTSIDER, RECEIVER, TEST_SECRET_KEY, make_issuer_app

SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
FAKE_ID = "mch_" + "x" * 27


def make_app(workdir: Path, **config: object) -> Flask:
    return make_issuer_app(workdir, **config)


@pytest.fixture(scope="module")
def module_app(tmp_path_factory) -> Iterator[tuple[Flask, Path]]:
    """One issuer app for the module and a snapshot of its freshly seeded database."""
    app = make_app(tmp_path_factory.mktemp("dashboard-pages"))
    db.connect(app.extensions["settings"].mock_issuer_db).execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close_thread_connections()
    snapshot = Path(app.extensions["settings"].mock_issuer_db).with_suffix(".snapshot")
    shutil.copyfile(app.extensions["settings"].mock_issuer_db, snapshot)
    yield app, snapshot
    db.close_thread_connections()


@pytest.fixture
def app(module_app) -> Flask:
    """The module's app with its database reset to the seeded snapshot: each test starts from
    the three seed machines and no tokens (building a fresh app per test costs ~0.3 s)."""
    app, snapshot = module_app
    db.close_thread_connections()
    path = Path(app.extensions["settings"].mock_issuer_db)
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(snapshot, path)
    db.connect(app.extensions["metrics_db"]).execute("DELETE FROM request_latency")
    return app


@pytest.fixture
def anon(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A client signed in through the real sign-in form."""
    client = app.test_client()
    resp = client.post(
        "/dashboard/sign-in",
        data={"secret_key": TEST_SECRET_KEY, "csrf_token": csrf(client)},
    )
    assert resp.status_code == 303
    return client


def csrf(client: FlaskClient) -> str:
    """The session's CSRF token as the page's forms carry it."""
    page = (
        client.get("/dashboard/sign-in")
        if not signed_in(client)
        else client.get("/dashboard/machines")
    )
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def signed_in(client: FlaskClient) -> bool:
    return client.get("/dashboard/usage").status_code == 200


def post(client: FlaskClient, path: str, **form) -> object:
    return client.post(path, data={"csrf_token": csrf(client), **form})


def flashes(client: FlaskClient, path: str) -> str:
    """The flash messages shown on the next page view."""
    page = client.get(path).text
    return " ".join(re.findall(r'<p class="flash \w+"[^>]*>([^<]*)</p>', page))


def api_machine(client: FlaskClient, machine_id: str) -> dict:
    return client.get(f"/v1/machines/{machine_id}", headers=SK).json


def mint(client: FlaskClient, key: str = CALLER.secret_key, **body) -> dict:
    resp = client.post("/v1/m2m_tokens", json=body, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 201
    return resp.json


def verify(client: FlaskClient, token: str, key: str = RECEIVER.secret_key) -> int:
    return client.post(
        "/m2m_tokens/verify", json={"token": token}, headers={"Authorization": f"Bearer {key}"}
    ).status_code


# ---- sign-in, session, CSRF ----


@pytest.mark.parametrize(
    "path",
    ["/dashboard/", "/dashboard/usage", "/dashboard/machines", f"/dashboard/machines/{CALLER.id}"],
)
def test_anonymous_visitors_are_sent_to_sign_in(anon, path):
    resp = anon.get(path)
    assert resp.status_code == 302
    assert resp.location.startswith("/dashboard/sign-in")


def test_sign_in_page_remembers_where_the_visitor_was_going(anon):
    resp = anon.get("/dashboard/machines?query=cal")
    assert resp.location == "/dashboard/sign-in?next=/dashboard/machines?query%3Dcal"
    resp = anon.post(
        "/dashboard/sign-in",
        data={
            "secret_key": TEST_SECRET_KEY,
            "csrf_token": csrf(anon),
            "next": "/dashboard/machines?query=cal",
        },
    )
    assert resp.status_code == 303 and resp.location == "/dashboard/machines?query=cal"


OUTSIDE_TARGETS = [
    "https://evil.example/",
    "//evil.example/x",
    "/v1/machines",
    "/dashboard/../v1/machines",
    "/dashboard/%2e%2e/v1/machines",
    "/dashboard/./../../v1/machines",
    "/dashboardx",
    "/dashboard\r\nX-Injected: 1",
    "/dashboard/machines\n",
    "/dashboard/\x00",
]


@pytest.mark.parametrize("target", OUTSIDE_TARGETS)
def test_sign_in_never_redirects_outside_the_dashboard(anon, target):
    resp = anon.post(
        "/dashboard/sign-in",
        data={"secret_key": TEST_SECRET_KEY, "csrf_token": csrf(anon), "next": target},
    )
    assert resp.status_code == 303 and resp.location == "/dashboard/usage"
    assert "X-Injected" not in resp.headers


@pytest.mark.parametrize("target", OUTSIDE_TARGETS)
def test_a_signed_in_visit_to_sign_in_never_redirects_outside_the_dashboard(client, target):
    resp = client.get("/dashboard/sign-in", query_string={"next": target})
    assert resp.status_code == 302 and resp.location == "/dashboard/usage"


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/dashboard/./machines//x/../?query=a", "/dashboard/machines/?query=a"),
        ("/dashboard", "/dashboard"),
        ("/dashboard/", "/dashboard/"),
    ],
)
def test_sign_in_follows_next_inside_the_dashboard_once_normalised(anon, target, location):
    resp = anon.post(
        "/dashboard/sign-in",
        data={"secret_key": TEST_SECRET_KEY, "csrf_token": csrf(anon), "next": target},
    )
    assert resp.status_code == 303 and resp.location == location


@pytest.mark.parametrize("wrong", ["", "sk_test_wrong", TEST_SECRET_KEY + "x", CALLER.secret_key])
def test_a_wrong_secret_key_is_refused_without_being_echoed(anon, wrong):
    resp = anon.post("/dashboard/sign-in", data={"secret_key": wrong, "csrf_token": csrf(anon)})
    assert resp.status_code == 401
    assert "not this issuer&#39;s instance secret key" in resp.text
    if wrong:
        assert wrong not in resp.text
    assert not signed_in(anon)


def test_sign_in_without_a_csrf_token_is_a_400_page(anon):
    anon.get("/dashboard/sign-in")
    resp = anon.post("/dashboard/sign-in", data={"secret_key": TEST_SECRET_KEY})
    assert resp.status_code == 400
    assert resp.mimetype == "text/html"
    assert "Reload the page and try again" in resp.text
    assert not signed_in(anon)


def test_sign_in_with_a_forged_csrf_token_is_refused(anon):
    anon.get("/dashboard/sign-in")
    resp = anon.post(
        "/dashboard/sign-in", data={"secret_key": TEST_SECRET_KEY, "csrf_token": "forged"}
    )
    assert resp.status_code == 400
    assert not signed_in(anon)


def test_session_cookie_is_httponly_samesite_lax_and_scoped_to_the_dashboard(anon):
    resp = anon.post(
        "/dashboard/sign-in", data={"secret_key": TEST_SECRET_KEY, "csrf_token": csrf(anon)}
    )
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("mock_issuer_dashboard=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
    assert TEST_SECRET_KEY not in cookie


def test_signing_in_replaces_the_pre_login_csrf_token(anon):
    before = csrf(anon)
    anon.post("/dashboard/sign-in", data={"secret_key": TEST_SECRET_KEY, "csrf_token": before})
    assert csrf(anon) != before


def test_the_session_cookie_works_on_another_worker_with_the_same_secret_key(client, tmp_path):
    other = make_app(tmp_path / "other-worker")  # same sk: what a second gunicorn worker builds
    cookie = client.get_cookie("mock_issuer_dashboard", path="/dashboard")
    second = other.test_client()
    second.set_cookie("mock_issuer_dashboard", cookie.value, path="/dashboard")
    assert second.get("/dashboard/usage").status_code == 200


def test_changing_the_instance_secret_key_signs_everybody_out(client, tmp_path):
    other = make_app(tmp_path / "rotated", CLERK_SECRET_KEY="sk_test_another0000000000000000")
    cookie = client.get_cookie("mock_issuer_dashboard", path="/dashboard")
    second = other.test_client()
    second.set_cookie("mock_issuer_dashboard", cookie.value, path="/dashboard")
    assert second.get("/dashboard/usage").status_code == 302


def test_an_explicit_session_secret_is_used_when_set(tmp_path):
    a = make_app(tmp_path / "a", MOCK_ISSUER_SESSION_SECRET="s" * 32)
    b = make_app(tmp_path / "b")
    assert a.secret_key == "s" * 32
    assert b.secret_key != a.secret_key and TEST_SECRET_KEY not in b.secret_key


def test_a_session_older_than_its_lifetime_is_signed_out(client):
    with client.session_transaction("/dashboard/") as session:  # the cookie's path
        session["signed_in_at"] = int(time.time()) - SESSION_MAX_AGE_SECONDS - 1
    assert client.get("/dashboard/usage").status_code == 302


def test_sign_out_ends_the_session(client):
    resp = post(client, "/dashboard/sign-out")
    assert resp.status_code == 303 and resp.location == "/dashboard/sign-in"
    assert not signed_in(client)


def test_sign_out_without_csrf_token_is_refused(client):
    assert client.post("/dashboard/sign-out").status_code == 400
    assert signed_in(client)


FORMS = [
    ("/dashboard/machines", {"name": "x", "default_token_ttl": "60"}),
    (f"/dashboard/machines/{CALLER.id}", {"name": "renamed", "default_token_ttl": "60"}),
    (f"/dashboard/machines/{CALLER.id}/secret-key", {}),
    (f"/dashboard/machines/{CALLER.id}/secret-key/rotate", {"previous_token_ttl": "0"}),
    (f"/dashboard/machines/{CALLER.id}/scopes", {"to_machine_id": OUTSIDER.id}),
    (f"/dashboard/machines/{CALLER.id}/scopes/{RECEIVER.id}/delete", {}),
    (f"/dashboard/machines/{CALLER.id}/tokens/mt_{'0' * 32}/revoke", {}),
    (f"/dashboard/machines/{CALLER.id}/delete", {"confirm_name": CALLER.name}),
    (f"/dashboard/machines/{CALLER.id}/oauth-client", {"token_format": "opaque"}),
]


@pytest.mark.parametrize(("path", "form"), FORMS)
def test_every_form_without_the_csrf_token_is_refused_and_changes_nothing(client, path, form):
    before = api_machine(client, CALLER.id)
    for data in (form, {**form, "csrf_token": "wrong"}):
        resp = client.post(path, data=data)
        assert resp.status_code == 400
        assert "Reload the page and try again" in resp.text
    assert api_machine(client, CALLER.id) == before
    assert oauth_token_format(client) == "jwt"
    assert client.get("/v1/machines?limit=100", headers=SK).json["total_count"] == 3


@pytest.mark.parametrize(("path", "form"), FORMS)
def test_every_form_needs_a_signed_in_session(anon, path, form):
    resp = anon.post(path, data={**form, "csrf_token": csrf(anon)})
    assert resp.status_code == 303 and resp.location == "/dashboard/sign-in"
    assert "session has ended" in flashes(anon, "/dashboard/sign-in")
    assert api_machine(anon, CALLER.id)["name"] == CALLER.name


def test_pages_send_security_headers(client):
    resp = client.get("/dashboard/usage")
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


def assert_html_error_page(resp, status: int) -> None:
    assert resp.status_code == status and resp.mimetype == "text/html"
    assert f"<h1>{status} " in resp.text and "Back to the dashboard" in resp.text
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("signed_in_client", [False, True])
def test_an_unknown_dashboard_path_is_an_html_404_page(anon, client, signed_in_client):
    resp = (client if signed_in_client else anon).get("/dashboard/no-such-page/x")
    assert_html_error_page(resp, 404)


def test_a_wrong_method_under_the_dashboard_is_an_html_405_page(client):
    resp = client.get("/dashboard/sign-out")
    assert_html_error_page(resp, 405)
    assert "POST" in resp.headers["Allow"] and "GET" not in resp.headers["Allow"]
    assert signed_in(client)


def test_a_crash_under_the_dashboard_is_an_html_500_page_without_details(
    client, monkeypatch, caplog
):
    def crash(*args, **kwargs):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(machines, "list_machines", crash)
    resp = client.get("/dashboard/machines")
    assert_html_error_page(resp, 500)
    assert "internal detail" not in resp.text
    assert "internal detail" in caplog.text  # logged for the operator


@pytest.mark.parametrize("path", ["/no-such-route", "/dashboardx", "/v1/machines/x/nope"])
def test_errors_outside_the_dashboard_keep_the_json_envelope(client, path):
    resp = client.get(path, headers=SK)
    assert resp.status_code == 404 and resp.headers["Content-Type"] == "application/json"
    assert resp.json["errors"][0]["code"] == "resource_not_found"
    wrong_method = client.put("/v1/machines", headers=SK)
    assert wrong_method.status_code == 405 and wrong_method.json["errors"]


def test_a_crash_in_the_api_keeps_the_json_envelope(client, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(machines, "list_machines", crash)
    resp = client.get("/v1/machines", headers=SK)
    assert resp.status_code == 500 and resp.headers["Content-Type"] == "application/json"
    assert "internal detail" not in resp.text


def test_stylesheet_is_served_without_signing_in(anon):
    resp = anon.get("/dashboard/static/dashboard.css")
    assert resp.status_code == 200 and resp.mimetype == "text/css"


# ---- usage ----


def usage_numbers(client: FlaskClient, query: str = "") -> dict[str, str]:
    page = client.get(f"/dashboard/usage{query}").text
    return dict(re.findall(r'id="(total-\w+|cost-[\w-]+)">([^<]+)<', page))


def test_usage_page_counts_creations_and_verifications_from_the_api(client):
    opaque = mint(client)
    mint(client, token_format="jwt")
    assert verify(client, opaque["token"]) == 200
    assert verify(client, "mt_" + "f" * 64) == 404
    numbers = usage_numbers(client, "?range=hour")
    assert numbers["total-creations"] == "2"
    assert numbers["total-verifications"] == "1"
    assert numbers["total-failed"] == "1"


@pytest.mark.parametrize("range_key", ["hour", "day", "30d"])
@pytest.mark.parametrize("split", ["format", "machine"])
def test_every_range_and_split_renders_both_charts(client, range_key, split):
    mint(client)
    page = client.get(f"/dashboard/usage?range={range_key}&split={split}").text
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 2
    bars = {"hour": 12, "day": 24, "30d": 30}[range_key]
    table = page[page.index("<table>") : page.index("</table>")]
    assert table.count('<th scope="row">') == bars
    layer = "opaque 1" if split == "format" else "test-caller 1"
    assert f"Total 1: {layer}" in page


def test_machine_split_shows_failed_verifications_as_their_own_series(client):
    token = mint(client)["token"]
    verify(client, token)
    verify(client, token, key=OUTSIDER.secret_key)  # outside the token's scopes: fails
    page = client.get("/dashboard/usage?range=hour&split=machine").text
    assert "Total 2: test-caller 1, failed 1." in page
    by_machine = page[page.index('id="by-machine"') :]
    row = re.search(r"test-caller</th>(.*?)</tr>", by_machine).group(1)
    assert re.findall(r">(\d+)<", row) == ["1", "1", "1"]


@pytest.mark.parametrize("query", ["?range=week", "?split=colour"])
def test_an_unknown_range_or_split_is_a_400_page(client, query):
    resp = client.get(f"/dashboard/usage{query}")
    assert resp.status_code == 400 and resp.mimetype == "text/html"
    assert "Unknown" in resp.text


def test_cost_estimate_applies_the_free_tier_and_the_configured_prices(tmp_path):
    app = make_app(
        tmp_path / "priced",
        MOCK_ISSUER_FREE_CREATIONS="1",
        MOCK_ISSUER_PRICE_CREATION="0.5",
        MOCK_ISSUER_FREE_VERIFICATIONS="0",
        MOCK_ISSUER_PRICE_VERIFICATION="0.25",
    )
    client = app.test_client()
    client.post(
        "/dashboard/sign-in", data={"secret_key": TEST_SECRET_KEY, "csrf_token": csrf(client)}
    )
    tokens = [mint(client) for _ in range(2)]
    reusable = {"claims": {"r": 1}, "min_remaining_ttl_seconds": 60}
    tokens.append(mint(client, **reusable))  # 3 creations, 2 billable: $1.00
    mint(client, **reusable)  # a reuse, not a creation
    verify(client, tokens[0]["token"])  # 1 billable opaque verification: $0.25
    numbers = usage_numbers(client)
    assert numbers["cost-to-date"] == "$1.25"
    # All of it within the last 30 days: projected = those counts x days in month / 30.
    days = days_in_month(datetime.now(UTC))
    creations = round(3 * days / 30)
    verifications = round(1 * days / 30)
    projected = (creations - 1) * Decimal("0.5") + verifications * Decimal("0.25")
    assert numbers["cost-projected"] == format_usd(projected)
    page = client.get("/dashboard/usage").text
    assert "$0.5" in page and "$0.25" in page
    assert "1 requests were answered with an existing token" in page
    assert f"the last 30 days scaled to the {days} days of" in " ".join(page.split())
    db.close_thread_connections()


def test_a_malformed_price_setting_stops_the_issuer_at_start_up(tmp_path):
    with pytest.raises(ValueError, match="MOCK_ISSUER_PRICE_CREATION"):
        make_app(tmp_path / "bad", MOCK_ISSUER_PRICE_CREATION="cheap")


# ---- machines ----


def test_machines_page_lists_the_seeded_machines_and_their_scopes(client):
    page = client.get("/dashboard/machines").text
    for machine in (CALLER, RECEIVER, OUTSIDER):
        assert machine.name in page and machine.id in page
    assert "All machines (3)" in page
    assert CALLER.secret_key not in page


def test_machines_are_paged_keeping_the_search(client):
    for i in range(51):
        name = f"paged-{i:02d}"
        assert client.post("/v1/machines", json={"name": name}, headers=SK).status_code == 200
    first = client.get("/dashboard/machines?query=paged").text
    assert first.count("paged-") == 50 and "paged-50" not in first
    assert 'href="/dashboard/machines?offset=50&amp;query=paged">Next page' in first
    second = client.get("/dashboard/machines?query=paged&offset=50").text
    assert "paged-50" in second and "paged-49" not in second
    assert 'href="/dashboard/machines?offset=0&amp;query=paged">Previous page' in second
    assert "Next page" not in second


def test_machines_page_searches_like_the_api(client):
    page = client.get("/dashboard/machines?query=outsider").text
    assert OUTSIDER.id in page and CALLER.id not in page
    assert "No machines match" in client.get("/dashboard/machines?query=nobody").text


def revealed(page: str) -> str | None:
    match = re.search(r'id="secret-value">(ak_\w+)<', page)
    return match.group(1) if match else None


def session_data(app: Flask, client: FlaskClient) -> dict:
    """The session cookie as the server reads it (signed, not encrypted)."""
    cookie = client.get_cookie("mock_issuer_dashboard", path="/dashboard")
    return app.session_interface.get_signing_serializer(app).loads(cookie.value)


def test_creating_a_machine_redirects_and_shows_its_secret_key_once(app, client):
    resp = post(client, "/dashboard/machines", name="billing", default_token_ttl="120")
    assert resp.status_code == 303
    machine_id = re.fullmatch(r"/dashboard/machines/(mch_\w{27})", resp.location).group(1)
    assert "ak_" not in json.dumps(session_data(app, client))  # sealed, not readable
    page = client.get(resp.location).text
    secret = revealed(page)
    assert "Machine billing created." in page
    assert api_machine(client, machine_id)["default_token_ttl"] == 120
    assert client.get(f"/v1/machines/{machine_id}/secret_key", headers=SK).json["secret"] == secret
    reloaded = client.get(resp.location).text  # what a reload of the page after the POST does
    assert revealed(reloaded) is None and secret not in reloaded
    assert client.get("/v1/machines", headers=SK).json["total_count"] == 4


def test_a_revealed_secret_is_shown_only_on_its_own_machines_page(client):
    resp = post(client, f"/dashboard/machines/{CALLER.id}/secret-key")
    assert CALLER.secret_key not in client.get(f"/dashboard/machines/{OUTSIDER.id}").text
    assert revealed(client.get(resp.location).text) is None  # the one showing was used up


def test_a_tampered_sealed_secret_is_not_shown(client):
    resp = post(client, f"/dashboard/machines/{CALLER.id}/secret-key")
    with client.session_transaction("/dashboard/") as session:  # the cookie's path
        entry = session["revealed"]
        entry["sealed"] = entry["sealed"][:-4] + (
            "AAAA" if entry["sealed"][-4:] != "AAAA" else "BBBB"
        )
        session["revealed"] = entry
    page = client.get(resp.location)
    assert page.status_code == 200 and revealed(page.text) is None


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "", "default_token_ttl": "60"}, "name is invalid"),
        ({"name": "n" * 257, "default_token_ttl": "60"}, "1 to 256 characters"),
        ({"name": "ok", "default_token_ttl": "0"}, "between 1 and 315360000"),
        ({"name": "ok", "default_token_ttl": "soon"}, "must be a whole number"),
    ],
)
def test_creating_a_machine_with_bad_input_shows_the_apis_error(client, form, message):
    resp = post(client, "/dashboard/machines", **form)
    assert resp.status_code == 303
    assert message in flashes(client, "/dashboard/machines")
    assert client.get("/v1/machines", headers=SK).json["total_count"] == 3


@pytest.mark.parametrize("blank", [" ", "  \t\n", "\u3000"])
def test_a_blank_name_is_refused_by_the_api_naming_the_field(client, blank):
    created = client.post("/v1/machines", json={"name": blank}, headers=SK)
    renamed = client.patch(f"/v1/machines/{CALLER.id}", json={"name": blank}, headers=SK)
    for resp in (created, renamed):
        assert resp.status_code == 422
        error = resp.json["errors"][0]
        assert error["meta"] == {"param_name": "name"} and "blank" in error["long_message"]
    assert client.get("/v1/machines", headers=SK).json["total_count"] == 3
    assert api_machine(client, CALLER.id)["name"] == CALLER.name


def test_a_blank_name_is_refused_by_the_dashboard(client):
    post(client, "/dashboard/machines", name="   ", default_token_ttl="60")
    assert "name is invalid" in flashes(client, "/dashboard/machines")
    post(client, f"/dashboard/machines/{CALLER.id}", name=" \t ", default_token_ttl="60")
    assert "name is invalid" in flashes(client, f"/dashboard/machines/{CALLER.id}")
    assert client.get("/v1/machines", headers=SK).json["total_count"] == 3
    assert api_machine(client, CALLER.id)["name"] == CALLER.name


def test_renaming_and_changing_the_default_ttl(client):
    resp = post(client, f"/dashboard/machines/{CALLER.id}", name="caller 2", default_token_ttl="90")
    assert resp.status_code == 303
    assert "Settings saved." in flashes(client, f"/dashboard/machines/{CALLER.id}")
    machine = api_machine(client, CALLER.id)
    assert (machine["name"], machine["default_token_ttl"]) == ("caller 2", 90)
    assert mint(client)["expiration"] - mint(client)["created_at"] <= 90_000


def test_an_invalid_ttl_is_refused_and_nothing_changes(client):
    post(client, f"/dashboard/machines/{CALLER.id}", name="caller 2", default_token_ttl="-5")
    assert "between 1 and 315360000" in flashes(client, f"/dashboard/machines/{CALLER.id}")
    assert api_machine(client, CALLER.id)["name"] == CALLER.name


def oauth_token_format(client: FlaskClient, machine_id: str = CALLER.id) -> str:
    """The machine's default format at /oauth/token, read through our admin route."""
    return client.get(f"/v1/_oauth_clients/{machine_id}", headers=SK).json["token_format"]


def test_the_oauth_client_form_sets_the_format_the_token_endpoint_issues(client):
    page = f"/dashboard/machines/{CALLER.id}"
    assert '<option value="jwt" selected>' in client.get(page).text
    resp = post(client, f"{page}/oauth-client", token_format="opaque")
    assert resp.status_code == 303
    assert "now issues this machine opaque access tokens" in flashes(client, page)
    assert '<option value="opaque" selected>' in client.get(page).text
    assert oauth_token_format(client) == "opaque"
    credentials = {"client_id": CALLER.id, "client_secret": CALLER.secret_key}
    answer = client.post("/oauth/token", data={"grant_type": "client_credentials", **credentials})
    assert answer.json["access_token"].startswith("mt_")


def test_an_unknown_oauth_token_format_is_refused_and_nothing_changes(client):
    page = f"/dashboard/machines/{CALLER.id}"
    post(client, f"{page}/oauth-client", token_format="paseto")
    assert "token_format is invalid: must be jwt or opaque" in flashes(client, page)
    assert oauth_token_format(client) == "jwt"


def test_machine_page_of_an_unknown_machine_is_a_404_page(client):
    resp = client.get(f"/dashboard/machines/{FAKE_ID}")
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    assert "Machine not found" in resp.text


def test_adding_and_removing_a_scope(client):
    post(client, f"/dashboard/machines/{OUTSIDER.id}/scopes", to_machine_id=RECEIVER.id)
    assert "may now send to test-receiver" in flashes(client, f"/dashboard/machines/{OUTSIDER.id}")
    scoped = [m["id"] for m in api_machine(client, OUTSIDER.id)["scoped_machines"]]
    assert scoped == [RECEIVER.id]
    token = mint(client, key=OUTSIDER.secret_key)["token"]
    assert verify(client, token) == 200

    post(client, f"/dashboard/machines/{OUTSIDER.id}/scopes/{RECEIVER.id}/delete")
    assert "Scope removed." in flashes(client, f"/dashboard/machines/{OUTSIDER.id}")
    assert api_machine(client, OUTSIDER.id)["scoped_machines"] == []


def test_scope_candidates_exclude_the_machine_itself_and_existing_scopes(client):
    page = client.get(f"/dashboard/machines/{CALLER.id}").text
    options = re.findall(r'<option value="(mch_\w+)"', page)
    assert options == [OUTSIDER.id]


@pytest.mark.parametrize(
    ("to_id", "message"),
    [(RECEIVER.id, "may already send to"), (FAKE_ID, "No machine with id"), ("", "is invalid")],
)
def test_a_scope_the_api_refuses_is_refused_with_its_message(client, to_id, message):
    post(client, f"/dashboard/machines/{CALLER.id}/scopes", to_machine_id=to_id)
    assert message in flashes(client, f"/dashboard/machines/{CALLER.id}")
    assert [m["id"] for m in api_machine(client, CALLER.id)["scoped_machines"]] == [RECEIVER.id]


def test_the_secret_key_is_shown_only_on_request(client):
    page = client.get(f"/dashboard/machines/{CALLER.id}").text
    assert CALLER.secret_key not in page
    resp = post(client, f"/dashboard/machines/{CALLER.id}/secret-key")
    assert resp.status_code == 303 and CALLER.secret_key not in resp.location
    shown = client.get(resp.location)
    assert revealed(shown.text) == CALLER.secret_key
    assert shown.headers["Cache-Control"] == "no-store"


def test_rotating_keeps_the_old_key_for_previous_token_ttl(client):
    resp = post(
        client, f"/dashboard/machines/{CALLER.id}/secret-key/rotate", previous_token_ttl="60"
    )
    assert resp.status_code == 303
    page = client.get(resp.location).text
    new_key = revealed(page)
    assert new_key != CALLER.secret_key and "keeps working for 60 seconds." in page
    mint(client, key=new_key)
    mint(client, key=CALLER.secret_key)  # still accepted for 60 s


def test_reloading_after_a_rotation_neither_rotates_again_nor_shows_the_key_again(client):
    resp = post(
        client, f"/dashboard/machines/{CALLER.id}/secret-key/rotate", previous_token_ttl="60"
    )
    new_key = revealed(client.get(resp.location).text)
    reloaded = client.get(resp.location).text
    assert revealed(reloaded) is None and new_key not in reloaded
    secret = client.get(f"/v1/machines/{CALLER.id}/secret_key", headers=SK).json["secret"]
    assert secret == new_key


def test_the_rotate_form_keeps_the_old_key_an_hour_by_default_and_says_what_0_does(client):
    page = client.get(f"/dashboard/machines/{CALLER.id}").text
    field = re.search(r'<input id="previous_token_ttl"[^>]*>', page).group(0)
    assert 'value="3600"' in field and 'aria-describedby="previous-ttl-help"' in field
    help_text = re.search(r'id="previous-ttl-help">([^<]*)<', page).group(1)
    assert "0 retires the old key at once" in help_text


def test_rotating_with_zero_previous_ttl_retires_the_old_key_at_once(client):
    post(client, f"/dashboard/machines/{CALLER.id}/secret-key/rotate", previous_token_ttl="0")
    resp = client.post(
        "/v1/m2m_tokens", json={}, headers={"Authorization": f"Bearer {CALLER.secret_key}"}
    )
    assert resp.status_code == 401


@pytest.mark.parametrize("value", ["28801", "-1", "a while"])
def test_rotating_with_a_bad_previous_token_ttl_keeps_the_key(client, value):
    resp = post(
        client, f"/dashboard/machines/{CALLER.id}/secret-key/rotate", previous_token_ttl=value
    )
    assert resp.status_code == 303
    assert "previous_token_ttl is invalid" in flashes(client, f"/dashboard/machines/{CALLER.id}")
    mint(client)


def test_deleting_needs_the_machines_name_typed(client):
    post(client, f"/dashboard/machines/{OUTSIDER.id}/delete", confirm_name="test-outsiderX")
    assert "does not match" in flashes(client, f"/dashboard/machines/{OUTSIDER.id}")
    assert api_machine(client, OUTSIDER.id)["id"] == OUTSIDER.id


def test_deleting_a_machine(client):
    resp = post(client, f"/dashboard/machines/{OUTSIDER.id}/delete", confirm_name=OUTSIDER.name)
    assert resp.status_code == 303 and resp.location == "/dashboard/machines"
    assert "Machine test-outsider deleted." in flashes(client, "/dashboard/machines")
    assert client.get(f"/v1/machines/{OUTSIDER.id}", headers=SK).status_code == 404


# ---- tokens ----


def test_machine_page_lists_opaque_tokens_with_status_and_last_use(client):
    used, unused = mint(client), mint(client)
    verify(client, used["token"])
    page = client.get(f"/dashboard/machines/{CALLER.id}").text
    assert "Opaque tokens (2)" in page
    used_row = re.search(rf'id="token-{used["id"]}">(.*?)</tr>', page, re.S).group(1)
    unused_row = re.search(rf'id="token-{unused["id"]}">(.*?)</tr>', page, re.S).group(1)
    assert "active" in used_row and "never" not in used_row
    assert "never" in unused_row
    assert used["token"] not in page and unused["token"] not in page


def test_revoking_a_token_from_the_page_is_seen_by_the_api(client):
    token = mint(client)
    resp = post(client, f"/dashboard/machines/{CALLER.id}/tokens/{token['id']}/revoke")
    assert resp.status_code == 303
    assert f"Token {token['id']} revoked." in flashes(client, f"/dashboard/machines/{CALLER.id}")
    assert verify(client, token["token"]) == 404
    listed = client.get(f"/v1/m2m_tokens?subject={CALLER.id}&revoked=true", headers=SK).json[
        "m2m_tokens"
    ]
    assert [(t["id"], t["revoked"]) for t in listed] == [(token["id"], True)]
    assert token["id"] not in client.get(f"/dashboard/machines/{CALLER.id}").text
    everything = client.get(f"/dashboard/machines/{CALLER.id}?all=1").text
    assert re.search(rf'id="token-{token["id"]}">.*?revoked', everything, re.S)


def test_a_token_cannot_be_revoked_through_another_machines_page(client):
    token = mint(client)
    post(client, f"/dashboard/machines/{OUTSIDER.id}/tokens/{token['id']}/revoke")
    assert "not found" in flashes(client, f"/dashboard/machines/{OUTSIDER.id}")
    assert verify(client, token["token"]) == 200


def test_tokens_are_paged(client):
    for _ in range(21):
        mint(client)
    first = client.get(f"/dashboard/machines/{CALLER.id}").text
    assert first.count('id="token-mt_') == 20 and "Older tokens" in first
    second = client.get(f"/dashboard/machines/{CALLER.id}?offset=20").text
    assert second.count('id="token-mt_') == 1 and "Newer tokens" in second


@pytest.mark.parametrize("offset", ["99999999999999999999", "-99999999999999999999", "x"])
@pytest.mark.parametrize("path", ["/dashboard/machines", f"/dashboard/machines/{CALLER.id}"])
def test_any_offset_is_clamped_instead_of_failing(client, path, offset):
    resp = client.get(f"{path}?offset={offset}")
    assert resp.status_code == 200 and resp.mimetype == "text/html"


# ---- /metrics ----


def metric(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(label_text)}\}} (\S+)$", text, re.M)
    assert match, f"{name}{{{label_text}}} not in metrics"
    return float(match.group(1))


def test_metrics_count_creations_and_verifications_by_format_and_outcome(anon):
    token = mint(anon)
    mint(anon, token_format="jwt")
    verify(anon, token["token"])
    verify(anon, "mt_" + "e" * 64)
    resp = anon.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.text
    assert metric(text, "mock_issuer_token_creations_total", format="opaque") == 1
    assert metric(text, "mock_issuer_token_creations_total", format="jwt") == 1
    assert metric(text, "mock_issuer_token_verifications_total", format="opaque", outcome="ok") == 1
    assert (
        metric(text, "mock_issuer_token_verifications_total", format="opaque", outcome="failed")
        == 1
    )
    assert metric(text, "mock_issuer_token_verifications_total", format="jwt", outcome="ok") == 0


def test_metrics_count_only_successful_creations_and_say_so(anon):
    refused = anon.post(
        "/v1/m2m_tokens",
        json={"token_format": "paper"},
        headers={"Authorization": f"Bearer {CALLER.secret_key}"},
    )
    assert refused.status_code == 422
    mint(anon)
    text = anon.get("/metrics").text
    assert metric(text, "mock_issuer_token_creations_total", format="opaque") == 1
    assert (
        metric(
            text,
            "mock_issuer_request_duration_seconds_count",
            method="POST",
            route="/v1/m2m_tokens",
            status="422",
        )
        == 1
    )
    help_line = re.search(r"^# HELP mock_issuer_token_creations_total (.*)$", text, re.M).group(1)
    assert "Counted only when minting succeeds" in help_line


def test_metrics_record_request_latency_by_route_pattern(anon):
    def count() -> float:
        text = anon.get("/metrics").text
        assert CALLER.id not in text  # the route pattern, never the requested ids
        if "/v1/machines/<machine_id>" not in text:
            return 0
        return metric(
            text,
            "mock_issuer_request_duration_seconds_count",
            method="GET",
            route="/v1/machines/<machine_id>",
            status="200",
        )

    before = count()
    anon.get(f"/v1/machines/{CALLER.id}", headers=SK)
    anon.get(f"/v1/machines/{RECEIVER.id}", headers=SK)
    assert count() == before + 2


def test_metrics_add_the_records_made_between_scrapes(anon):
    def creations() -> float:
        return metric(
            anon.get("/metrics").text, "mock_issuer_token_creations_total", format="opaque"
        )

    mint(anon)
    first = creations()
    mint(anon)
    mint(anon)
    assert creations() == first + 2
    assert creations() == first + 2  # a scrape with nothing new changes nothing


def test_latency_histogram_is_cumulative_with_every_request_in_plus_inf(app):
    conn = db.connect(app.extensions["metrics_db"])
    for seconds in (0.0005, 0.001, 0.02, 7.0):  # 0.001 is inside le="0.001": bounds include
        metrics.record_latency(conn, "GET", "/x", "200", seconds)
    text = app.test_client().get("/metrics").text
    labels = {"method": "GET", "route": "/x", "status": "200"}
    name = "mock_issuer_request_duration_seconds"
    assert metric(text, f"{name}_bucket", le="0.001", **labels) == 2
    assert metric(text, f"{name}_bucket", le="0.01", **labels) == 2
    assert metric(text, f"{name}_bucket", le="0.025", **labels) == 3
    assert metric(text, f"{name}_bucket", le="2.5", **labels) == 3
    assert metric(text, f"{name}_bucket", le="+Inf", **labels) == 4
    assert metric(text, f"{name}_count", **labels) == 4
    assert metric(text, f"{name}_sum", **labels) == pytest.approx(7.0215)


def test_recording_latency_never_writes_the_issuers_own_database(app, anon):
    issuer_db = db.connect(app.extensions["settings"].mock_issuer_db)
    before = issuer_db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
    anon.get("/v1/machines", headers={"Authorization": "Bearer sk_test_wrong"})  # rejected
    anon.get("/healthz")
    tables = [r[0] for r in issuer_db.execute("SELECT name FROM sqlite_master")]
    assert "request_latency" not in tables and len(tables) == before
    recorded = db.connect(app.extensions["metrics_db"]).execute(
        "SELECT SUM(count) FROM request_latency"
    )
    assert recorded.fetchone()[0] == 2
    assert (
        app.extensions["metrics_db"]
        == app.extensions["settings"].mock_issuer_db[:-3] + ".metrics.db"
    )


def test_a_latency_the_database_refuses_is_logged_and_never_fails_the_request(caplog):
    broken = sqlite3.connect(":memory:")  # no request_latency table: every insert fails
    metrics.record_latency(broken, "GET", "/x", "200", 0.01)
    assert "request latency not recorded" in caplog.text
