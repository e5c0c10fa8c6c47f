"""The bad-input campaign, short, through real processes: a gunicorn issuer (two workers) and
a receiver, over HTTP with `requests`, plus malformed HTTP written to raw sockets.

Requests that break HTTP itself (a header with NUL, a bad Content-Length) are answered by the
server's parser (gunicorn, werkzeug) with its own 400 page before the app sees them; those are
allowed to be non-JSON, but never 5xx, and the processes must stay healthy and the database
unchanged.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import given, reject
from hypothesis import strategies as st
from xprocess.xprocess import XPROCESS_BLOCK_DELIMITER

from tests.bad_input import (
    TARGET,
    FuzzRequest,
    assert_clerk_answer,
    assert_rfc6750_answer,
    issuer_requests,
    receiver_requests,
    snapshot,
    usable_receiver_requests,
)
from tests.faults_strategies import fuzz_settings, json_bytes
from tests.harness import RunningApp, free_port, start_app
from tests.seed import CALLER, OUTSIDER, RECEIVER, SK, issuer_env

pytestmark = pytest.mark.e2e

TIMEOUT = 10


def worker_boots(app: RunningApp) -> int:
    """How many gunicorn workers this run of the process has booted (a crashed worker is
    replaced, so the count grows)."""
    return app.log_text().rsplit(XPROCESS_BLOCK_DELIMITER, 1)[-1].count("Booting worker")


@pytest.fixture(scope="module")
def apps(xprocess, tmp_path_factory) -> Iterator[tuple[RunningApp, RunningApp]]:
    port = free_port()
    env = issuer_env(
        tmp_path_factory.mktemp("fuzz-processes"), MOCK_ISSUER_URL=f"http://127.0.0.1:{port}"
    )
    issuer = start_app(xprocess, "mock_issuer", env, server="gunicorn", workers=2, port=port)
    receiver = start_app(
        xprocess,
        "receiver_app",
        {
            "CLERK_API_URL": issuer.url,
            "CLERK_MACHINE_SECRET_KEY": RECEIVER.secret_key,
            "CLERK_MACHINE_ID": RECEIVER.id,
        },
        server="gunicorn",
        workers=1,
    )
    for app, workers in ((issuer, 2), (receiver, 1)):  # /healthz answers once one is up
        deadline = time.monotonic() + 30
        while worker_boots(app) < workers:
            assert time.monotonic() < deadline, f"{app.app}: workers did not boot"
            time.sleep(0.05)
    yield issuer, receiver
    receiver.stop()
    issuer.stop()


@pytest.fixture(scope="module")
def issuer_db(apps) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{apps[0].env['MOCK_ISSUER_DB']}?mode=ro", uri=True)
    yield conn
    conn.close()


def is_server_parser_answer(resp: requests.Response) -> bool:
    """A 400 written by gunicorn's or werkzeug's HTTP parser, not by the app."""
    return resp.status_code == 400 and "json" not in resp.headers.get("Content-Type", "")


def http_send(base: str, req: FuzzRequest, target: str) -> requests.Response:
    path = req.path.replace("%7Btarget%7D", target).replace(TARGET, target)
    body = req.body
    if body is not None:
        body = body.replace(json_bytes(TARGET)[1:-1], target.encode())
    try:
        return requests.request(
            req.method,
            base + path,
            data=body,
            headers=req.headers(),
            params=req.query,
            timeout=TIMEOUT,
            allow_redirects=False,
        )
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError):
        reject()  # `requests` itself refuses to send it
        raise AssertionError("unreachable") from None


@pytest.fixture(scope="module")
def target(apps) -> str:
    issuer = apps[0]
    resp = requests.post(
        f"{issuer.url}/v1/machines", json={"name": "fuzz-target"}, headers=SK, timeout=TIMEOUT
    )
    return resp.json()["id"]


@fuzz_settings(40)
@given(req=issuer_requests())
def test_issuer_process_never_answers_5xx_and_rejects_without_writing(apps, issuer_db, target, req):
    issuer = apps[0]
    before = snapshot(issuer_db)
    resp = http_send(issuer.url, req, target)
    try:
        if is_server_parser_answer(resp):
            return
        assert_clerk_answer(req.method, resp.status_code, resp.headers, resp.content)
        if resp.status_code >= 400:
            assert snapshot(issuer_db) == before, f"{req.method} {req.path} changed the database"
    finally:
        if "_faults" in req.path:
            requests.delete(f"{issuer.url}/v1/_faults", headers=SK, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def receiver_tokens(apps) -> dict[str, list[str]]:
    issuer = apps[0]

    def mint(machine, **body: Any) -> str:
        resp = requests.post(
            f"{issuer.url}/v1/m2m_tokens",
            json=body,
            timeout=TIMEOUT,
            headers={"Authorization": f"Bearer {machine.secret_key}"},
        )
        return resp.json()["token"]

    return {
        "valid": [mint(CALLER), mint(CALLER, token_format="jwt")],
        "invalid": [mint(OUTSIDER), mint(OUTSIDER, token_format="jwt")],
    }


@fuzz_settings(40)
@given(data=st.data())
def test_receiver_process_answers_200_to_usable_messages_else_400_401(apps, receiver_tokens, data):
    receiver = apps[1]
    tokens = receiver_tokens["valid"] + receiver_tokens["invalid"]
    usable = usable_receiver_requests(receiver_tokens["valid"])
    req = data.draw(st.one_of(receiver_requests(tokens), usable))
    resp = http_send(receiver.url, req, "")
    if is_server_parser_answer(resp):
        return

    class Answer:  # the in-process checks read a Flask response; give them the same view
        status_code = resp.status_code
        headers = resp.headers

        @staticmethod
        def get_data(as_text: bool = False):
            return resp.text if as_text else resp.content

    assert_rfc6750_answer(Answer, req, receiver_tokens["valid"], tokens)


# ---- malformed HTTP on raw sockets ----

# `PATH` and `AUTH` are replaced per server: the issuer's create route with the caller's key,
# the receiver's /receive with a valid token, so the body is really read.
POST = (
    b"POST PATH HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer AUTH\r\n"
    b"Content-Type: application/json\r\n"
)
GET = b"GET PATH HTTP/1.1\r\nHost: x\r\n"
RAW_REQUESTS = {
    "garbage": b"GARBAGE\r\n\r\n",
    "http09": b"GET PATH\r\n\r\n",
    "header-without-colon": GET + b"No colon here\r\n\r\n",
    "nul-in-header": GET + b"Authorization: Bearer a\x00b\r\n\r\n",
    "bad-content-length": POST + b"Content-Length: abc\r\n\r\n{}",
    "negative-content-length": POST + b"Content-Length: -5\r\n\r\n{}",
    "truncated-body": POST + b"Content-Length: 100\r\n\r\n{",
    "bad-chunk": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "unterminated-chunk": POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{}",
    "smuggling-shape": POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /v1/jwks HTTP/1.1\r\n\r\n",
    "huge-header": GET + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "many-headers": GET + b"".join(b"X-H%d: 1\r\n" % i for i in range(300)) + b"\r\n",
    "long-path": b"GET /v1/machines/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-utf8-path": b"GET /v1/machines/\xff\xfe%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-uri": b"GET http://evil.example/v1/jwks HTTP/1.1\r\nHost: x\r\n\r\n",
    "two-authorizations": POST + b"Authorization: Bearer sk_test_other\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "unfinished-headers": GET + b"X-Half: ",
}


# What each server answers (issuer, receiver): gunicorn's own parser errors (400, 414, 431),
# the app's answer when the request parses (401, 404, 400), or CLOSED: the server hung up
# without a byte after our half-sent request, as it should. Any other ending (a timeout, a
# reset, a different status) fails, so "no answer" cannot hide a crashed worker.
CLOSED = "closed"
EXPECTED: dict[str, tuple[int | str, int | str]] = {
    "garbage": (400, 400),
    "http09": (400, 400),
    "header-without-colon": (400, 400),
    "nul-in-header": (400, 400),
    "bad-content-length": (400, 400),
    "negative-content-length": (400, 400),
    "truncated-body": (400, 400),  # the apps' own 400: the body ended early
    "bad-chunk": (400, 400),
    "unterminated-chunk": (400, 400),
    "smuggling-shape": (400, 400),
    "huge-header": (431, 431),
    "many-headers": (431, 431),
    "long-path": (414, 414),
    "non-utf8-path": (400, 400),
    "absolute-uri": (401, 404),  # GET /v1/jwks: the issuer wants its key; no such receiver route
    "two-authorizations": (401, 400),  # the joined header is no key; for the receiver, malformed
    "unfinished-headers": (CLOSED, CLOSED),
}


def raw_exchange(port: int, data: bytes) -> tuple[bytes, str]:
    """Send `data`, close our side, return what came back and how the exchange ended: "eof"
    (the server closed cleanly), "timeout", "reset" or "hung-up-while-sending"."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b"", "hung-up-while-sending"
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            return b"".join(chunks), "timeout"
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        return b"".join(chunks), "eof"


def outcome_of(answer: bytes, ending: str) -> int | str:
    """The status of a complete answer, CLOSED for a clean hang-up with no byte, else the
    ending and the first bytes (which never match an expectation)."""
    line = answer.split(b"\r\n", 1)[0].split()
    if len(line) > 1 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    if not answer and ending == "eof":
        return CLOSED
    return f"{ending}: {answer[:80]!r}"


def test_every_raw_request_has_an_expected_outcome():
    assert set(EXPECTED) == set(RAW_REQUESTS)


@pytest.mark.parametrize("name", sorted(RAW_REQUESTS))
def test_malformed_http_gets_its_pinned_answer_and_no_worker_dies_or_data_changes(
    apps, issuer_db, receiver_tokens, name
):
    issuer, receiver = apps
    before = snapshot(issuer_db)
    boots = [worker_boots(issuer), worker_boots(receiver)]
    for app, path, auth, expected in (
        (issuer, b"/v1/m2m_tokens", CALLER.secret_key, EXPECTED[name][0]),
        (receiver, b"/receive", receiver_tokens["valid"][1], EXPECTED[name][1]),
    ):
        raw = RAW_REQUESTS[name].replace(b"PATH", path).replace(b"AUTH", auth.encode())
        assert outcome_of(*raw_exchange(app.port, raw)) == expected, app.app
    assert [worker_boots(issuer), worker_boots(receiver)] == boots  # no worker died
    assert snapshot(issuer_db) == before
    ak = {"Authorization": f"Bearer {CALLER.secret_key}"}
    token = requests.post(f"{issuer.url}/v1/m2m_tokens", json={}, headers=ak, timeout=TIMEOUT)
    resp = requests.post(
        f"{receiver.url}/receive",
        json={"message": "still up"},
        timeout=TIMEOUT,
        headers={"Authorization": f"Bearer {token.json()['token']}"},
    )
    assert resp.status_code == 200
