"""Fault injection and Clerk's per-instance rate limit, emulated (ours; both off by default).

A fault rule says which requests it hits (`"POST /m2m_tokens/verify"`, `"GET /v1/machines/*"`,
`"*"`), what share of them (applied deterministically: of the first n matching requests exactly
floor(n * share) are faulted, so tests are never flaky), how many at most (`count`), and what
happens: added latency, an error status (429 and 503 carry `Retry-After`), or a hang that
outlasts the client's timeout. Every faulted answer is Clerk's error envelope.

Rules, the rate limit and per-route request counters live in the database, so every gunicorn
worker obeys the same rules and counts into the same totals. Each request reads one version
number; when nothing is switched on, that is all it costs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from . import db
from .auth import require_instance
from .db_access import get_conn
from .errors import ClerkError, body_invalid, invalid_param
from .requests_util import json_body

log = logging.getLogger("mock_issuer")

ADMIN_PATH = "/v1/_faults"
MAX_LATENCY_MS = 60_000
MAX_HANG_SECONDS = 60.0
MAX_RULES = 50
RATE_LIMIT_PRESETS = {"development": (100, 10), "production": (1000, 10)}
_PAUSE_SLICE = 0.1  # seconds between checks whether the faults were changed during a pause
# Only Clerk's API surface is ever faulted: not /healthz, this admin route or any page.
_FAULTABLE_PREFIXES = ("/v1/", "/m2m_tokens", "/.well-known/", "/oauth/")

SCHEMA = """
CREATE TABLE IF NOT EXISTS fault_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fault_rules (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    max_faults INTEGER,
    matched INTEGER NOT NULL DEFAULT 0,
    faulted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS request_counts (
    route TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_limit_windows (
    window_start INTEGER PRIMARY KEY,
    count INTEGER NOT NULL
);
"""

RULE_FIELDS = {"route", "status", "share", "count", "latency_ms", "hang_seconds", "retry_after"}
CONFIG_FIELDS = {"rules", "rate_limit", "count_requests"}

_ERROR_CODES = {
    429: ("too_many_requests", "Too many requests"),
    500: ("internal_clerk_error", "Oops, an unexpected error occurred"),
    502: ("bad_gateway", "Bad gateway"),
    503: ("service_unavailable", "Service unavailable"),
    504: ("gateway_timeout", "Gateway timeout"),
}


class FaultSpecError(ValueError):
    """A fault rule or setting that cannot be used; `param` names the field."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


# ---- rules and settings ----


@dataclass(frozen=True)
class FaultRule:
    """What to do to which requests. At least one of status, latency_ms or hang_seconds."""

    route: str = "*"
    status: int | None = None
    share: float = 1.0
    count: int | None = None
    latency_ms: int = 0
    hang_seconds: float | None = None
    retry_after: int = 1

    @classmethod
    def from_dict(cls, data: Any) -> FaultRule:
        if not isinstance(data, dict):
            raise FaultSpecError("rules", "each rule must be a JSON object")
        unknown = sorted(set(data) - RULE_FIELDS)
        if unknown:
            raise FaultSpecError(unknown[0], "unknown field")
        retry_after = _optional_int(data, "retry_after", 0, 3600)
        rule = cls(
            route=_route(_given(data, "route", "*")),
            status=_optional_int(data, "status", 400, 599),
            share=_share(_given(data, "share", 1.0)),
            count=_optional_int(data, "count", 1, 10**9),
            latency_ms=_optional_int(data, "latency_ms", 0, MAX_LATENCY_MS) or 0,
            hang_seconds=_hang(data.get("hang_seconds")),
            retry_after=1 if retry_after is None else retry_after,  # 0 is a valid Retry-After
        )
        if rule.status is None and not rule.latency_ms and rule.hang_seconds is None:
            raise FaultSpecError("status", "a rule needs status, latency_ms or hang_seconds")
        _compile_route(rule.route)
        return rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        effects = []
        if self.latency_ms:
            effects.append(f"+{self.latency_ms} ms")
        if self.hang_seconds is not None:
            effects.append(f"hang {self.hang_seconds:g} s")
        if self.status is not None:
            effects.append(str(self.status))
        limit = f", at most {self.count}" if self.count is not None else ""
        return f"{self.route} -> {' then '.join(effects)} (share {self.share:g}{limit})"


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` requests per fixed window of `window_seconds`, for the whole instance."""

    limit: int
    window_seconds: int
    name: str

    @classmethod
    def parse(cls, spec: Any) -> RateLimit | None:
        """`off`, `development` (100/10s), `production` (1000/10s) or `N/Ws` such as `5/1s`."""
        if spec is None:
            return None
        if not isinstance(spec, str):
            raise FaultSpecError("rate_limit", "must be off, development, production or N/Ws")
        text = spec.strip().lower()
        if text in ("", "off", "none", "0"):
            return None
        if text in RATE_LIMIT_PRESETS:
            return cls(*RATE_LIMIT_PRESETS[text], text)
        match = re.fullmatch(r"(\d{1,7})\s*/\s*(\d{1,4})\s*s", text)
        if not match or not int(match[1]) >= 1 or not 1 <= int(match[2]) <= 3600:
            raise FaultSpecError(
                "rate_limit", "must be off, development, production or N/Ws (e.g. 100/10s)"
            )
        return cls(int(match[1]), int(match[2]), f"{int(match[1])}/{int(match[2])}s")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultConfig:
    """Everything that can be switched on: what the admin route and the environment set."""

    rules: tuple[FaultRule, ...] = ()
    rate_limit: RateLimit | None = None
    count_requests: bool = False

    @classmethod
    def from_dict(cls, data: Any) -> FaultConfig:
        """From the admin route's body or MOCK_ISSUER_FAULTS: an object with `rules`,
        `rate_limit` and `count_requests`, or just a list of rules."""
        if isinstance(data, list):
            data = {"rules": data}
        if not isinstance(data, dict):
            raise FaultSpecError("rules", "send an object with rules, or a list of rules")
        unknown = sorted(set(data) - CONFIG_FIELDS)
        if unknown:
            raise FaultSpecError(unknown[0], "unknown field")
        rules = _given(data, "rules", [])
        if not isinstance(rules, list) or len(rules) > MAX_RULES:
            raise FaultSpecError("rules", f"must be a list of at most {MAX_RULES} rules")
        count_requests = _given(data, "count_requests", False)
        if not isinstance(count_requests, bool):
            raise FaultSpecError("count_requests", "must be true or false")
        return cls(
            tuple(FaultRule.from_dict(r) for r in rules),
            RateLimit.parse(data.get("rate_limit")),
            count_requests,
        )

    def describe(self) -> str:
        parts = [rule.describe() for rule in self.rules]
        if self.rate_limit:
            rl = self.rate_limit
            parts.append(f"rate limit {rl.limit} per {rl.window_seconds} s ({rl.name})")
        if self.count_requests:
            parts.append("counting requests")
        return "; ".join(parts) or "off"


def _given(data: dict[str, Any], name: str, default: Any) -> Any:
    """The field's value, or `default` when it is absent or null: only those two mean the
    default, never another falsy value such as 0 or {}."""
    value = data.get(name)
    return default if value is None else value


def _optional_int(data: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FaultSpecError(name, f"must be an integer from {lo} to {hi}")
    return value


def _share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise FaultSpecError("share", "must be a number greater than 0 and at most 1")
    return float(value)


def _hang(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultSpecError("hang_seconds", "must be a number of seconds")
    if not 0 < value <= MAX_HANG_SECONDS:
        raise FaultSpecError("hang_seconds", f"must be > 0 and at most {MAX_HANG_SECONDS:g}")
    return float(value)


def _route(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise FaultSpecError("route", "must be '*' or 'METHOD /path' (1 to 200 characters)")
    return " ".join(value.split())


# ---- matching requests ----


def normalize_path(path: str) -> str:
    """The path with any `/v1` prefix and trailing slash removed: `/v1/m2m_tokens/verify` and
    `/m2m_tokens/verify` are the same route to a rule."""
    if path == "/v1" or path.startswith("/v1/"):
        path = path[3:]
    return path.rstrip("/") or "/"


def _compile_route(route: str) -> tuple[str | None, re.Pattern[str] | None]:
    """(method or None for any, path regex or None for any) of a route pattern. In the path,
    `*` or `<name>` or `{name}` is one segment and `**` any rest."""
    if route == "*":
        return None, None
    method, _, path = route.partition(" ") if " " in route else ("*", "", route)
    if not re.fullmatch(r"\*|[A-Za-z]{1,10}", method) or not path.startswith("/"):
        raise FaultSpecError("route", "must be '*' or 'METHOD /path' such as 'POST /m2m_tokens'")
    parts = []
    for segment in normalize_path(path).split("/"):
        if segment == "**":
            parts.append(".*")
        elif segment == "*" or re.fullmatch(r"<[^>]*>|\{[^}]*\}", segment):
            parts.append("[^/]+")
        else:
            parts.append(".*".join(re.escape(p) for p in segment.split("*")))
    return (None if method == "*" else method.upper()), re.compile("/".join(parts))


@dataclass(frozen=True)
class _LiveRule:
    id: int
    rule: FaultRule
    method: str | None
    path: re.Pattern[str] | None
    share: Fraction

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.fullmatch(path) is not None


@dataclass(frozen=True)
class _State:
    version: int
    config: FaultConfig
    live: tuple[_LiveRule, ...]

    @property
    def active(self) -> bool:
        c = self.config
        return bool(c.rules or c.rate_limit or c.count_requests)


# ---- storage ----


def init_storage(conn: sqlite3.Connection) -> None:
    """Create the fault tables (race-safe: every worker runs it at start)."""
    with db.write(conn):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM fault_settings WHERE key = 'version'").fetchone()
    return int(row[0]) if row else 0


def _setting(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM fault_settings WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _put_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO fault_settings (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def store_config(conn: sqlite3.Connection, config: FaultConfig, *, append: bool = False) -> None:
    """Replace the rules and settings (or append the rules), reset the rule counters and bump
    the version every worker watches. Call inside a write transaction."""
    if not append:
        conn.execute("DELETE FROM fault_rules")
        conn.execute("DELETE FROM rate_limit_windows")
        _put_setting(conn, "rate_limit", json.dumps(config.rate_limit and config.rate_limit.name))
        _put_setting(conn, "count_requests", json.dumps(config.count_requests))
    elif conn.execute("SELECT COUNT(*) FROM fault_rules").fetchone()[0] >= MAX_RULES:
        raise FaultSpecError("rules", f"at most {MAX_RULES} rules")
    for rule in config.rules:
        conn.execute(
            "INSERT INTO fault_rules (spec, max_faults) VALUES (?, ?)",
            (json.dumps(rule.to_dict()), rule.count),
        )
    _put_setting(conn, "version", str(_version(conn) + 1))


def clear_all(conn: sqlite3.Connection) -> None:
    """Everything off and every counter zeroed. Call inside a write transaction."""
    store_config(conn, FaultConfig())
    conn.execute("DELETE FROM request_counts")


def _load_state(conn: sqlite3.Connection) -> _State:
    version = _version(conn)
    live = []
    for row in conn.execute("SELECT id, spec FROM fault_rules ORDER BY id"):
        rule = FaultRule(**json.loads(row[1]))
        method, path = _compile_route(rule.route)
        share = Fraction(rule.share).limit_denominator(10_000)
        live.append(_LiveRule(row[0], rule, method, path, share))
    config = FaultConfig(
        tuple(r.rule for r in live),
        RateLimit.parse(json.loads(_setting(conn, "rate_limit") or "null")),
        json.loads(_setting(conn, "count_requests") or "false"),
    )
    return _State(version, config, tuple(live))


_cache: dict[str, _State] = {}
_cache_lock = threading.Lock()


def _current_state(conn: sqlite3.Connection, db_path: str) -> _State:
    """The fault state, re-read only when its version changed (one indexed read per request)."""
    version = _version(conn)
    cached = _cache.get(db_path)
    if cached is not None and cached.version == version:
        return cached
    state = _load_state(conn)
    with _cache_lock:
        _cache[db_path] = state
    return state


def report(conn: sqlite3.Connection) -> dict[str, Any]:
    """The admin route's answer: rules with their counters, rate limit, request counts."""
    state = _load_state(conn)
    counters = {
        row[0]: (row[1], row[2], row[3])
        for row in conn.execute("SELECT id, matched, faulted, max_faults FROM fault_rules")
    }
    rules = []
    for live in state.live:
        matched, faulted, max_faults = counters.get(live.id, (0, 0, None))
        remaining = None if max_faults is None else max(0, max_faults - faulted)
        rules.append(
            {"id": live.id, **live.rule.to_dict(), "matched": matched, "faulted": faulted,
             "remaining": remaining}
        )  # fmt: skip
    counts = dict(conn.execute("SELECT route, count FROM request_counts ORDER BY route"))
    rate_limit = state.config.rate_limit
    return {
        "object": "fault_config",
        "version": state.version,
        "active": state.active,
        "rules": rules,
        "rate_limit": rate_limit.to_dict() if rate_limit else None,
        "count_requests": state.config.count_requests,
        "request_counts": counts,
    }


# ---- applying faults to requests ----


@dataclass(frozen=True)
class _Decision:
    rule_id: int | None = None
    rule: FaultRule | None = None
    rate_limited_for: int | None = None  # seconds until the window ends


def _route_key(method: str) -> str:
    rule = request.url_rule
    return f"{method} {normalize_path(rule.rule) if rule is not None else '(no route)'}"


def _decide(conn: sqlite3.Connection, state: _State, method: str, path: str) -> _Decision:
    """Count the request, apply the rate limit, then let the first live matching rule decide;
    all in one write transaction so workers agree on every counter."""
    with db.write(conn):
        conn.execute(
            "INSERT INTO request_counts (route, count) VALUES (?, 1)"
            " ON CONFLICT (route) DO UPDATE SET count = count + 1",
            (_route_key(method),),
        )
        rate_limit = state.config.rate_limit
        if rate_limit is not None:
            window_ms = rate_limit.window_seconds * 1000
            now = db.now_ms()
            start = now // window_ms * window_ms
            conn.execute("DELETE FROM rate_limit_windows WHERE window_start < ?", (start,))
            used = conn.execute(
                "INSERT INTO rate_limit_windows (window_start, count) VALUES (?, 1)"
                " ON CONFLICT (window_start) DO UPDATE SET count = count + 1 RETURNING count",
                (start,),
            ).fetchone()[0]
            if used > rate_limit.limit:
                return _Decision(rate_limited_for=max(1, -(-(start + window_ms - now) // 1000)))
        for live in state.live:
            if not live.matches(method, path):
                continue
            row = conn.execute(
                "UPDATE fault_rules SET matched = matched + 1 WHERE id = ?"
                " AND (max_faults IS NULL OR faulted < max_faults) RETURNING matched",
                (live.id,),
            ).fetchone()
            if row is None:
                continue  # spent: the next rule may still apply
            matched = row[0]
            # Deterministic share: exactly floor(n * share) of the first n matches are faulted.
            if math.floor(matched * live.share) > math.floor((matched - 1) * live.share):
                conn.execute(
                    "UPDATE fault_rules SET faulted = faulted + 1 WHERE id = ?", (live.id,)
                )
                return _Decision(live.id, live.rule)
            return _Decision()
    return _Decision()


def _pause(conn: sqlite3.Connection, seconds: float, version: int) -> bool:
    """Sleep `seconds`, in slices; False (at once) if the faults were changed meanwhile, so
    clearing them ends every pending delay and hang."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(_PAUSE_SLICE, left))
        if _version(conn) != version:
            return False
    return True


def fault_error(status: int, detail: str, retry_after: int | None = None) -> ClerkError:
    """A faulted answer in Clerk's envelope; 429 and 503 say when to retry."""
    code, message = _ERROR_CODES.get(status, ("injected_fault", "Injected fault"))
    headers = {}
    if status in (429, 503):
        headers["Retry-After"] = str(retry_after if retry_after is not None else 1)
    return ClerkError(status, code, message, f"{message} ({detail})", headers=headers)


def _before_request() -> None:
    path = request.path
    if not path.startswith(_FAULTABLE_PREFIXES) or normalize_path(path).startswith("/_faults"):
        return
    conn = get_conn()
    state = _current_state(conn, current_app.config["MOCK_ISSUER_DB"])
    if not state.active:
        return
    method = request.method
    decision = _decide(conn, state, method, normalize_path(path))
    if decision.rate_limited_for is not None:
        rl = state.config.rate_limit
        assert rl is not None
        raise fault_error(
            429,
            f"rate limit of {rl.limit} requests per {rl.window_seconds} s exceeded; emulated",
            decision.rate_limited_for,
        )
    rule = decision.rule
    if rule is None:
        return
    log.info("fault injected: %s -> rule %d (%s)", _route_key(method), decision.rule_id,
             rule.describe())  # fmt: skip
    if rule.latency_ms and not _pause(conn, rule.latency_ms / 1000, state.version):
        return
    if rule.hang_seconds is not None:
        if not _pause(conn, rule.hang_seconds, state.version):
            return
        raise fault_error(
            rule.status or 504, f"injected by fault rule {decision.rule_id}", rule.retry_after
        )
    if rule.status is not None:
        raise fault_error(
            rule.status, f"injected by fault rule {decision.rule_id}", rule.retry_after
        )


# ---- admin route (ours): GET/PUT/DELETE /v1/_faults, POST /v1/_faults/rules ----

bp = Blueprint("faults", __name__, url_prefix=ADMIN_PATH)


@bp.before_request
def _instance_only() -> None:
    require_instance()


def _config_from_body(allowed: set[str]) -> FaultConfig:
    data = json_body(allowed, required=False)
    try:
        return FaultConfig.from_dict(data)
    except FaultSpecError as exc:
        if exc.reason == "unknown field":
            raise body_invalid(f"unknown field {exc.param!r}", param=exc.param) from None
        raise invalid_param(exc.param, exc.reason) from None


@bp.get("")
def get_faults() -> Any:
    return jsonify(report(get_conn()))


@bp.put("")
def put_faults() -> Any:
    """Replace every rule and setting (absent ones are off) and reset the rule counters."""
    config = _config_from_body(CONFIG_FIELDS)
    conn = get_conn()
    with db.write(conn):
        store_config(conn, config)
    log.info("fault injection set by %s: %s", ADMIN_PATH, config.describe())
    return jsonify(report(conn))


@bp.post("/rules")
def add_rule() -> Any:
    """Append one rule, keeping the others and their counters."""
    data = json_body(RULE_FIELDS, required=True)
    try:
        rule = FaultRule.from_dict(data)
    except FaultSpecError as exc:
        raise invalid_param(exc.param, exc.reason) from None
    conn = get_conn()
    try:
        with db.write(conn):
            store_config(conn, FaultConfig((rule,)), append=True)
    except FaultSpecError as exc:
        raise invalid_param(exc.param, exc.reason) from None
    log.info("fault rule added by %s: %s", ADMIN_PATH, rule.describe())
    return jsonify(report(conn))


@bp.delete("")
def delete_faults() -> Any:
    """Everything off, every counter zeroed."""
    conn = get_conn()
    with db.write(conn):
        clear_all(conn)
    log.info("fault injection cleared by %s", ADMIN_PATH)
    return jsonify(report(conn))


# ---- start-up ----


def config_from_env(faults: str, rate_limit: str) -> FaultConfig:
    """MOCK_ISSUER_FAULTS (JSON: a list of rules or the admin route's object) and
    MOCK_ISSUER_RATE_LIMIT; raises RuntimeError naming the variable."""
    try:
        data = json.loads(faults) if faults.strip() else {}
    except ValueError:
        raise RuntimeError("MOCK_ISSUER_FAULTS must be JSON: a list of fault rules") from None
    try:
        config = FaultConfig.from_dict(data)
    except FaultSpecError as exc:
        raise RuntimeError(f"MOCK_ISSUER_FAULTS is invalid: {exc}") from None
    try:
        limit = RateLimit.parse(rate_limit) if rate_limit.strip() else config.rate_limit
    except FaultSpecError as exc:
        raise RuntimeError(f"MOCK_ISSUER_RATE_LIMIT is invalid: {exc.reason}") from None
    return FaultConfig(config.rules, limit, config.count_requests)


def _server_start_id() -> str:
    """The same for every gunicorn worker of one server start (their parent is the arbiter),
    so the environment's faults are applied once per start, and not again when gunicorn
    replaces a worker (that would undo faults set at run time)."""
    if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn"):
        return f"gunicorn:{os.getppid()}"
    return f"process:{os.getpid()}"


def init_app(app: Flask) -> None:
    """Create the fault tables, apply the environment's faults once per server start, and
    register the request hook and the admin route."""
    config = config_from_env(app.config["MOCK_ISSUER_FAULTS"], app.config["MOCK_ISSUER_RATE_LIMIT"])
    conn = db.connect(app.config["MOCK_ISSUER_DB"])
    init_storage(conn)
    start_id = _server_start_id()
    with db.write(conn):
        applied = _setting(conn, "applied_at_start") == start_id
        if not applied:
            clear_all(conn)
            store_config(conn, config)
            _put_setting(conn, "applied_at_start", start_id)
    if not applied and config != FaultConfig():
        log.warning("fault injection ON from the environment: %s", config.describe())
    app.before_request(_before_request)
    app.register_blueprint(bp)
