"""The bad-input campaign shared by the in-process (test_faults_bad_input.py) and the process
(test_faults_bad_input_processes.py) suites: the requests Hypothesis draws for every issuer route
and for the receiver, and the checks every answer must pass."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from werkzeug.http import parse_options_header

from tests.faults_strategies import (
    CONTENT_TYPES,
    JSON_TEXT,
    JSON_VALUES,
    TEXT,
    authorizations,
    bodies,
    json_bytes,
    query_strings,
)
from tests.seed import CALLER, OUTSIDER, RECEIVER, TEST_SECRET_KEY

UNKNOWN_MACHINE = "mch_" + "u" * 27
UNKNOWN_TOKEN_ID = "mt_" + "0" * 32
TARGET = "{target}"  # replaced by a throwaway machine's id when the request is sent
# Recording failed verifications is the point of usage_events (and of the counters its trigger
# keeps): the only tables a rejected request may change.
MAY_CHANGE_ON_REJECT = {"usage_events", "usage_rollups", "usage_totals"}
KEYS = [
    TEST_SECRET_KEY,
    CALLER.secret_key,
    RECEIVER.secret_key,
    OUTSIDER.secret_key,
    "sk_test_" + "9" * 32,
    "ak_" + "9" * 32,
]


def strict_json(data: bytes) -> Any:
    """Parse as JSON that any client accepts: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"answer holds {name}, which is not JSON")

    return json.loads(data, parse_constant=refuse)


def snapshot(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Every row of every table (but the usage records), order-independent."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {
        table: sorted(repr(tuple(row)) for row in conn.execute(f"SELECT * FROM {table}"))  # noqa: S608
        for table in tables
        if table not in MAY_CHANGE_ON_REJECT
    }


def assert_clerk_answer(method: str, status: int, headers: Any, data: bytes) -> None:
    """Below 500, `application/json` exactly, and Clerk's envelope on every error."""
    assert status < 500, data[:500]
    if method in ("HEAD", "OPTIONS") and status < 400:
        return  # Flask answers these itself, without a body
    assert headers.get("Content-Type") == "application/json", (status, headers)
    if method == "HEAD":
        return
    body = strict_json(data)
    if status >= 400:
        assert set(body) == {"errors", "clerk_trace_id"}, body
        error = body["errors"][0]
        assert isinstance(error["code"], str) and error["code"], body
        assert isinstance(error["message"], str) and error["message"], body
        assert isinstance(error["long_message"], str) and error["long_message"], body
        if status in (429, 503):
            assert headers.get("Retry-After", "").isdigit()


# ---- the issuer's routes ----

CREATE_FIELDS = {"token_format", "seconds_until_expiration", "claims", "min_remaining_ttl_seconds"}
LIST_QUERY = {"subject", "revoked", "expired", "limit", "offset"}
RULE_FIELDS = {"route", "status", "retry_after", "delay_seconds", "count", "share"}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # `{id}` and `{other}` are filled with drawn path segments
    body_fields: frozenset[str] = frozenset()
    query: frozenset[str] = frozenset()


def route(method: str, path: str, body=(), query=()) -> Route:
    return Route(method, path, frozenset(body), frozenset(query))


ISSUER_ROUTES = [
    route("POST", "/v1/m2m_tokens", CREATE_FIELDS),
    route("POST", "/m2m_tokens", CREATE_FIELDS),
    route("GET", "/m2m_tokens", query=LIST_QUERY),
    route("GET", "/v1/m2m_tokens", query=LIST_QUERY),
    route("POST", "/m2m_tokens/{id}/revoke", {"revocation_reason"}),
    route("POST", "/v1/m2m_tokens/{id}/revoke", {"revocation_reason"}),
    route("POST", "/m2m_tokens/verify", {"token", "secret"}),
    route("POST", "/v1/m2m_tokens/verify", {"token", "secret"}),
    route("GET", "/v1/machines", query={"limit", "offset", "query", "order_by"}),
    route("POST", "/v1/machines", {"name", "scoped_machines", "default_token_ttl"}),
    route("GET", "/v1/machines/{id}"),
    route("PATCH", "/v1/machines/{id}", {"name", "default_token_ttl"}),
    route("DELETE", "/v1/machines/{id}"),
    route("GET", "/v1/machines/{id}/secret_key"),
    route("POST", "/v1/machines/{id}/secret_key/rotate", {"previous_token_ttl"}),
    route("POST", "/v1/machines/{id}/scopes", {"to_machine_id"}),
    route("DELETE", "/v1/machines/{id}/scopes/{other}"),
    route("GET", "/v1/jwks"),
    route("GET", "/.well-known/jwks.json"),
    route("POST", "/v1/jwks/rotate"),
    route("GET", "/v1/usage", query={"range", "machine_id", "bucket"}),
    route("GET", "/v1/_faults"),
    route("PUT", "/v1/_faults", {"rules"}),
    route("DELETE", "/v1/_faults"),
    route("GET", "/healthz"),
]

# Values worth more than random ones for some fields: real ids, real-looking tokens.
MACHINE_IDS = st.sampled_from([TARGET, RECEIVER.id, UNKNOWN_MACHINE, "mch_short", CALLER.id])
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "to_machine_id": MACHINE_IDS,
    "scoped_machines": st.lists(MACHINE_IDS, max_size=3),
    "subject": st.sampled_from([CALLER.id, RECEIVER.id, UNKNOWN_MACHINE, "mch_x"]),
    "machine_id": st.sampled_from([CALLER.id, UNKNOWN_MACHINE, "nope"]),
    "token_format": st.sampled_from(["opaque", "jwt", "JWT", "", "paper"]),
    "route": st.sampled_from(["*", "POST /m2m_tokens", "GET", "/x", "BAD METHOD /x"]),
}
# Rule-shaped lists for PUT /v1/_faults, so the rule fields are fuzzed, not only `rules`.
FIELD_VALUES["rules"] = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            n: st.one_of(FIELD_VALUES.get(n, JSON_VALUES), JSON_VALUES) for n in sorted(RULE_FIELDS)
        },
    ),
    max_size=2,
)
PATH_SEGMENTS = st.one_of(
    st.sampled_from([TARGET, UNKNOWN_MACHINE, UNKNOWN_TOKEN_ID, "mt_zz", "..", "%2F", " "]),
    TEXT.filter(bool),
)


@dataclass
class FuzzRequest:
    method: str
    path: str
    body: bytes | None
    content_type: str | None
    authorization: str | None
    query: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        return headers


def body_for(fields: frozenset[str]) -> st.SearchStrategy[bytes | None]:
    known = st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(FIELD_VALUES.get(name, JSON_VALUES), JSON_VALUES)
            for name in sorted(fields)
        },
    ).map(json_bytes)
    return st.one_of(known, bodies(fields))


@st.composite
def issuer_requests(draw: st.DrawFn) -> FuzzRequest:
    if draw(st.integers(0, 9)) == 0:  # any method on any path
        method = draw(
            st.sampled_from(
                ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PROPFIND"]
            )
        )
        segments = draw(st.lists(TEXT.filter(bool), max_size=3))
        path = "/" + "/".join(quote(s, safe="") for s in segments)
        fields: frozenset[str] = frozenset()
        query_names: frozenset[str] = frozenset()
    else:
        r = draw(st.sampled_from(ISSUER_ROUTES))
        method, fields, query_names = r.method, r.body_fields, r.query
        path = r.path.replace("{id}", quote(draw(PATH_SEGMENTS), safe="{}"))
        path = path.replace("{other}", quote(draw(PATH_SEGMENTS), safe="{}"))
    return FuzzRequest(
        method=method,
        path=path,
        body=draw(body_for(fields)),
        content_type=draw(CONTENT_TYPES),
        authorization=draw(authorizations(KEYS)),
        query=draw(query_strings(query_names)),
    )


# ---- the receiver ----

REALM = 'Bearer realm="receiver"'


@st.composite
def receiver_requests(draw: st.DrawFn, tokens: list[str]) -> FuzzRequest:
    return FuzzRequest(
        method="POST",
        path="/receive",
        body=draw(
            st.one_of(
                body_for(frozenset({"message"})),
                st.sampled_from([b'{"message": "hi"}', b"{}", b"null"]),
            )
        ),
        content_type=draw(CONTENT_TYPES),
        authorization=draw(authorizations(tokens)),
        query=draw(st.one_of(st.just({}), st.just({"access_token": "x"}), query_strings(set()))),
    )


NOT_MULTIPART = CONTENT_TYPES.filter(lambda c: not (c or "").startswith("multipart/"))


@st.composite
def usable_receiver_requests(draw: st.DrawFn, valid: list[str]) -> FuzzRequest:
    """A request /receive must accept: a valid token and no body, or a JSON object whose
    `message` is any string or absent, among any other fields."""
    value = draw(st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=3))
    value.pop("message", None)
    value.update(draw(st.fixed_dictionaries({}, optional={"message": JSON_TEXT | st.none()})))
    body = draw(st.one_of(st.sampled_from([None, b""]), st.just(json_bytes(value))))
    json_types = ["application/json", "application/json; charset=utf-8", "application/ld+json"]
    return FuzzRequest(
        method="POST",
        path="/receive",
        body=body,
        content_type=draw(st.sampled_from(json_types) if body else NOT_MULTIPART),
        authorization=draw(st.sampled_from(valid).map(lambda t: f"Bearer {t}")),
        query=draw(query_strings(set()).filter(lambda q: "access_token" not in q)),
    )


RECEIVER_MAX_BODY = 64 * 1024  # receiver_app's default MAX_CONTENT_LENGTH
# JSON nested deeper than this may exhaust the receiver's stack (then 400, by design): only
# shallower bodies are required to be accepted.
USABLE_DEPTH = 100


def sends_valid_token(req: FuzzRequest, valid: list[str]) -> bool:
    """One of `valid`, exactly, in `Authorization: Bearer` (any case and spacing), nowhere else."""
    scheme, _, credentials = (req.authorization or "").partition(" ")
    return (
        "access_token" not in req.query
        and scheme.lower() == "bearer"
        and credentials.lstrip(" ") in valid
    )


def is_usable_message(req: FuzzRequest) -> bool:
    """Whether /receive must accept this body: none at all, or, sent as JSON, under the size and
    depth limits, a JSON object whose `message` is a string or absent (null counts as absent)."""
    mimetype = parse_options_header(req.content_type or "")[0].lower()
    if mimetype.startswith("multipart/"):
        return False  # Flask's test client writes a multipart body of its own when given none
    if not req.body:
        return True
    if len(req.body) > RECEIVER_MAX_BODY or not (
        mimetype == "application/json"
        or (mimetype.startswith("application/") and mimetype.endswith("+json"))
    ):
        return False
    try:
        value = json.loads(req.body)
    except (ValueError, RecursionError):
        return False
    if nesting_depth(value) > USABLE_DEPTH:  # the receiver's parser may run out of stack
        return False
    return isinstance(value, dict) and isinstance(value.get("message"), str | None)


def nesting_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0)."""
    depth, level = 0, [(value, 0)]
    while level:
        item, d = level.pop()
        if isinstance(item, dict | list):
            depth = max(depth, d + 1)
            level.extend(
                (child, d + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return depth


def assert_rfc6750_answer(resp, req: FuzzRequest, valid: list[str], tokens: list[str]) -> None:
    """The receiver's answer to `req`, which has no caller allowlist (so never a 403)."""
    status = resp.status_code
    sent_valid_token = sends_valid_token(req, valid)
    if sent_valid_token and is_usable_message(req):
        assert status == 200, (status, resp.get_data()[:300])
    oversize = len(req.body or b"") > RECEIVER_MAX_BODY
    allowed = (200, 400, 401, 413) if oversize else (200, 400, 401)
    assert status in allowed, (status, resp.get_data()[:300])
    body = strict_json(resp.get_data())
    if status == 413:  # an oversize body behind a valid token: a JSON error, not a 5xx
        assert body["error"] == "request_entity_too_large"
        return
    challenge = resp.headers.get("WWW-Authenticate")
    if status == 200:
        assert sent_valid_token
        return
    if status == 401:
        assert challenge == REALM or challenge.startswith(REALM + ', error="invalid_token"'), (
            challenge
        )
    else:  # 400: a broken header (with a challenge) or, behind a valid token, a broken body
        assert challenge is None or challenge.startswith(REALM + ', error="invalid_request"')
        assert challenge is not None or sent_valid_token
        assert body["error"] == "invalid_request"
    for token in tokens:
        assert token not in (challenge or "") and token not in resp.get_data(as_text=True)
