"""Fault injection (ours; off by default), and the hook that applies `rate_limit.py` too.

A fault rule: a `route` (`"POST /m2m_tokens"` as the issuer routes it, `/v1` optional, or `"*"`
for every API route), what happens (an error `status`, where 429 and 503 carry `Retry-After`,
and/or a `delay_seconds`, which past the client's timeout is a hang), and how often (the next
`count` requests, a `share` of them, or both). Shares are deterministic: of the first n
requests a rule sees, exactly floor(n * share) are faulted, so tests never flake. A rule with
neither status nor delay only counts the requests it sees.

Rules and their counters live in the database, so every gunicorn worker obeys the same rules
and counts into the same totals. With no rule set, a request costs one indexed read.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from . import db
from .auth import require_instance
from .db import get_conn
from .errors import ClerkError, body_invalid, invalid_param
from .rate_limit import SCHEMA as rate_limit_schema
from .rate_limit import RateLimit
from .requests_util import as_int, as_number, as_str, json_body, require

log = logging.getLogger("mock_issuer")

ADMIN_PATH = "/v1/_faults"
OUR_ADMIN_PREFIX = "/v1/_"  # our routes off Clerk's surface: /v1/_faults, /v1/_sign
RULE_FIELDS = {"route", "status", "retry_after", "delay_seconds", "count", "share"}
MAX_RULES = 50
MAX_DELAY_SECONDS = 60
# Only Clerk's API surface is ever faulted: not /healthz, the admin route or any page.
_API_PREFIXES = ("/v1/", "/m2m_tokens", "/.well-known/", "/oauth/")
_ERROR_CODES = {
    429: ("too_many_requests", "Too many requests"),
    500: ("internal_clerk_error", "Oops, an unexpected error occurred"),
    502: ("bad_gateway", "Bad gateway"),
    503: ("service_unavailable", "Service unavailable"),
    504: ("gateway_timeout", "Gateway timeout"),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS fault_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fault_rules (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    matched INTEGER NOT NULL DEFAULT 0,
    faulted INTEGER NOT NULL DEFAULT 0
);
"""


# ---- rules ----


@dataclass(frozen=True)
class FaultRule:
    """Which requests (`route`), what happens to them, how many of them."""

    route: str
    status: int | None = None
    retry_after: int = 1
    delay_seconds: float = 0
    count: int | None = None
    share: float = 1.0

    @classmethod
    def parse(cls, data: Any, routes: Collection[str]) -> FaultRule:
        """A rule from JSON, checked against the app's `routes`; ClerkError naming the field."""
        if not isinstance(data, dict):
            raise invalid_param("rules", "each rule must be a JSON object")
        unknown = sorted(set(data) - RULE_FIELDS)
        if unknown:
            raise body_invalid(f"unknown field {unknown[0]!r}", param=unknown[0])
        share = _optional(data, "share", 1.0, as_number, 0, 1)
        if share == 0:
            raise invalid_param("share", "must be greater than 0")
        return cls(
            route=_route(require(data, "route"), routes),
            status=_optional(data, "status", None, as_int, 400, 599),
            retry_after=_optional(data, "retry_after", 1, as_int, 0, 3600),
            delay_seconds=_optional(data, "delay_seconds", 0, as_number, 0, MAX_DELAY_SECONDS),
            count=_optional(data, "count", None, as_int, 1, 10**9),
            share=share,
        )

    def hits(self, matched: int, faulted: int) -> bool:
        """Whether the `matched`-th request this rule sees is faulted, `faulted` so far (never
        for a rule that only counts)."""
        if self.status is None and not self.delay_seconds:
            return False
        if self.count is not None and faulted >= self.count:
            return False
        # Exactly floor(n * share) of the first n; the epsilon absorbs float rounding.
        return int(matched * self.share + 1e-9) > int((matched - 1) * self.share + 1e-9)

    def describe(self) -> str:
        effects = [f"delay {self.delay_seconds:g} s"] if self.delay_seconds else []
        effects += [str(self.status)] if self.status else []
        limits = [f"share {self.share:g}"] if self.share < 1 else []
        limits += [f"at most {self.count}"] if self.count else []
        return f"{self.route} -> {' then '.join(effects) or 'count only'}" + (
            f" ({', '.join(limits)})" if limits else ""
        )


def _optional(data: dict[str, Any], name: str, default: Any, check: Any, lo: Any, hi: Any) -> Any:
    """`check(name, value, lo, hi)` of the field, or `default` when it is absent or null
    (never for 0 or "")."""
    value = data.get(name)
    return default if value is None else check(name, value, lo, hi)


def _route(value: Any, routes: Collection[str]) -> str:
    route = " ".join(as_str("route", value, max_len=200).split())
    if route == "*":
        return route
    method, _, path = route.partition(" ")
    key = f"{method.upper()} {normalize_path(path)}"
    if key not in routes:
        known = ", ".join(sorted(routes))
        raise invalid_param("route", f"must be '*' or one of the API routes: {known}")
    return key


def parse_rules(document: Any, routes: Collection[str]) -> tuple[FaultRule, ...]:
    """The rules of `{"rules": [...]}`: the admin route's PUT body and MOCK_ISSUER_FAULTS."""
    if not isinstance(document, dict):
        raise body_invalid('send an object: {"rules": [...]}')
    unknown = sorted(set(document) - {"rules"})
    if unknown:
        raise body_invalid(f"unknown field {unknown[0]!r}", param=unknown[0])
    rules = require(document, "rules")
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise invalid_param("rules", f"must be a list of at most {MAX_RULES} rules")
    return tuple(FaultRule.parse(rule, routes) for rule in rules)


def normalize_path(path: str) -> str:
    """The path with any `/v1` prefix and trailing slash removed: `/v1/m2m_tokens/verify` and
    `/m2m_tokens/verify` are the same route to a rule."""
    if path == "/v1" or path.startswith("/v1/"):
        path = path[3:]
    return path.rstrip("/") or "/"


def _is_api(path: str) -> bool:
    return path.startswith(_API_PREFIXES) and not path.startswith(OUR_ADMIN_PREFIX)


def api_routes(app: Flask) -> set[str]:
    """Every route a rule can name, as `METHOD /path` with `/v1` folded in."""
    return {
        f"{method} {normalize_path(rule.rule)}"
        for rule in app.url_map.iter_rules()
        if _is_api(rule.rule)
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }


# ---- storage ----


def _rules(conn: sqlite3.Connection) -> list[tuple[int, FaultRule, int, int]]:
    """(id, rule, matched, faulted) of every rule, in order."""
    rows = conn.execute("SELECT id, spec, matched, faulted FROM fault_rules ORDER BY id")
    return [(row[0], FaultRule(**json.loads(row[1])), row[2], row[3]) for row in rows]


def store_rules(conn: sqlite3.Connection, rules: Sequence[FaultRule]) -> None:
    """Replace every rule; counters start at zero. Call inside a write transaction."""
    conn.execute("DELETE FROM fault_rules")
    conn.executemany(
        "INSERT INTO fault_rules (spec) VALUES (?)", [(json.dumps(asdict(r)),) for r in rules]
    )


def report(conn: sqlite3.Connection) -> dict[str, Any]:
    """The admin route's answer: the rules with their counters, and the rate limit."""
    rate_limit = current_app.extensions["fault_rate_limit"]
    return {
        "object": "fault_rules",
        "rules": [
            {**asdict(rule), "matched": matched, "faulted": faulted}
            for _, rule, matched, faulted in _rules(conn)
        ],
        "rate_limit": asdict(rate_limit) if rate_limit else None,
    }


def describe(rules: Sequence[FaultRule], rate_limit: RateLimit | None = None) -> str:
    parts = [rule.describe() for rule in rules]
    if rate_limit:
        parts.append(rate_limit.describe())
    return "; ".join(parts) or "off"


# ---- applying faults to requests ----


def _decide(conn: sqlite3.Connection, route: str) -> FaultRule | None:
    """Count the request into every rule it reaches; the first that faults it decides. One
    write transaction, so workers agree on every counter."""
    if conn.execute("SELECT 1 FROM fault_rules LIMIT 1").fetchone() is None:
        return None  # nothing set: the usual case
    with db.write(conn):
        for rule_id, rule, matched, faulted in _rules(conn):
            if rule.route not in ("*", route):
                continue
            hit = rule.hits(matched + 1, faulted)
            conn.execute(
                "UPDATE fault_rules SET matched = matched + 1, faulted = faulted + ? WHERE id = ?",
                (int(hit), rule_id),
            )
            if hit:
                return rule
    return None


def fault_error(status: int, detail: str, retry_after: int) -> ClerkError:
    """A faulted answer in Clerk's envelope; 429 and 503 say when to retry."""
    code, message = _ERROR_CODES.get(status, ("injected_fault", "Injected fault"))
    headers = {"Retry-After": str(retry_after)} if status in (429, 503) else {}
    return ClerkError(status, code, message, f"{message} ({detail})", headers=headers)


def _before_request() -> None:
    if not _is_api(request.path):
        return
    conn = get_conn()
    rate_limit = current_app.extensions["fault_rate_limit"]
    retry_after = rate_limit.count(conn) if rate_limit else None
    if retry_after is not None:
        raise fault_error(429, f"{rate_limit.describe()} exceeded; emulated", retry_after)
    url_rule = request.url_rule
    route = f"{request.method} {normalize_path(url_rule.rule)}" if url_rule else "(no route)"
    rule = _decide(conn, route)
    if rule is None:
        return
    log.info("fault injected on %s by the rule %s", route, rule.describe())
    time.sleep(rule.delay_seconds)
    if rule.status is not None:
        raise fault_error(rule.status, f"fault rule on {rule.route}", rule.retry_after)


# ---- admin route (ours): GET lists, PUT replaces, DELETE clears ----

bp = Blueprint("faults", __name__, url_prefix=ADMIN_PATH)


@bp.before_request
def _instance_only() -> None:
    require_instance()


@bp.get("")
def get_faults() -> Any:
    return jsonify(report(get_conn()))


@bp.put("")
def put_faults() -> Any:
    """Replace every rule; counters start at zero."""
    rules = parse_rules(json_body({"rules"}), api_routes(current_app))
    return _replace(rules, "set")


@bp.delete("")
def delete_faults() -> Any:
    return _replace((), "cleared")


def _replace(rules: Sequence[FaultRule], done: str) -> Any:
    conn = get_conn()
    with db.write(conn):
        store_rules(conn, rules)
    log.info("fault rules %s by %s: %s", done, ADMIN_PATH, describe(rules))
    return jsonify(report(conn))


# ---- start-up ----


def rules_from_env(text: str, routes: Collection[str]) -> tuple[FaultRule, ...]:
    """MOCK_ISSUER_FAULTS, the PUT body's JSON; RuntimeError naming the variable."""
    try:
        return parse_rules(json.loads(text), routes) if text.strip() else ()
    except ValueError:
        raise RuntimeError('MOCK_ISSUER_FAULTS must be JSON: {"rules": [...]}') from None
    except ClerkError as exc:
        raise RuntimeError(f"MOCK_ISSUER_FAULTS is invalid: {exc.long_message}") from None


def _server_start_id() -> str:
    """The same for every gunicorn worker of one server start (their parent is the arbiter),
    so the environment's rules are applied once per start, and not again when gunicorn
    replaces a worker (that would undo rules set at run time)."""
    if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn"):
        return f"gunicorn:{os.getppid()}"
    return f"process:{os.getpid()}"


def init_app(app: Flask) -> None:
    """Create the tables, apply the environment's rules once per server start, and register
    the request hook and the admin route."""
    settings = app.extensions["settings"]
    rate_limit = RateLimit.parse(settings.mock_issuer_rate_limit)
    rules = rules_from_env(settings.mock_issuer_faults, api_routes(app))
    app.extensions["fault_rate_limit"] = rate_limit
    conn = db.connect(settings.mock_issuer_db)
    start_id = _server_start_id()
    with db.write(conn):
        for statement in (*SCHEMA.split(";"), rate_limit_schema):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute("SELECT value FROM fault_settings WHERE key = 'started'").fetchone()
        first = row is None or row[0] != start_id
        if first:
            store_rules(conn, rules)
            conn.execute("DELETE FROM rate_limit_windows")
            conn.execute("INSERT OR REPLACE INTO fault_settings VALUES ('started', ?)", (start_id,))
    if first and (rules or rate_limit):
        log.warning("fault injection ON from the environment: %s", describe(rules, rate_limit))
    app.before_request(_before_request)
    app.register_blueprint(bp)
