"""End-to-end: the caller against the real mock issuer and receiver, as processes (harness).

One issuer and one receiver are shared by the module; tests that need a cold token cache or
their own settings start their own caller (a second or so each). The outage test has its own
three processes, since it stops them.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from flask import Flask
from flask import request as flask_request
from werkzeug.serving import make_server

from tests.harness import RunningApp, free_port, start_app
from tests.seed import CALLER, OUTSIDER, RECEIVER, TEST_SECRET_KEY, issuer_env

pytestmark = pytest.mark.e2e

SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}


def receiver_env(issuer: RunningApp) -> dict[str, str]:
    return {
        "CLERK_API_URL": issuer.url,
        "CLERK_MACHINE_SECRET_KEY": RECEIVER.secret_key,
        "CLERK_MACHINE_ID": RECEIVER.id,
        "M2M_VERIFY_CACHE_SECONDS": "0",  # ask the issuer every time: revocation is immediate
    }


def caller_env(issuer: RunningApp, receiver: RunningApp, key: str = CALLER.secret_key, **extra):
    env = {
        "CLERK_API_URL": issuer.url,
        "CLERK_MACHINE_SECRET_KEY": key,
        "RECEIVER_URL": receiver.url,
        "M2M_TOKEN_FORMAT": "opaque",
        "M2M_TOKEN_TTL_SECONDS": "300",
        "M2M_REFRESH_MARGIN_SECONDS": "30",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def trio(xprocess, tmp_path_factory):
    """A seeded issuer, a receiver and a caller shared by the module."""
    port = free_port()
    env = issuer_env(
        tmp_path_factory.mktemp("caller-e2e"), MOCK_ISSUER_URL=f"http://127.0.0.1:{port}"
    )
    issuer = start_app(xprocess, "mock_issuer", env, port=port)
    receiver = start_app(xprocess, "receiver_app", receiver_env(issuer))
    caller = start_app(xprocess, "caller_app", caller_env(issuer, receiver))
    yield issuer, receiver, caller
    for app in (caller, receiver, issuer):
        app.stop()


@pytest.fixture
def issuer(trio) -> RunningApp:
    return trio[0]


@pytest.fixture
def receiver(trio) -> RunningApp:
    return trio[1]


@pytest.fixture
def caller(trio) -> RunningApp:
    return trio[2]


@pytest.fixture
def fresh_caller(start, issuer, receiver):
    """A caller of its own (cold token cache, own settings) against the shared issuer."""

    def _fresh_caller(key: str = CALLER.secret_key, server: str = "flask", **extra):
        return start("caller_app", caller_env(issuer, receiver, key, **extra), server=server)

    return _fresh_caller


def send(caller: RunningApp, token_format: str | None = None) -> requests.Response:
    params = {"format": token_format} if token_format else None
    return requests.get(f"{caller.url}/send", params=params, timeout=30)


def creations(issuer: RunningApp, machine_id: str = CALLER.id) -> int:
    """Token creations by `machine_id`, from the issuer's usage counts."""
    answer = requests.get(
        f"{issuer.url}/v1/usage",
        params={"machine_id": machine_id, "range": "hour"},
        headers=SK,
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["totals"]["creations"]["total"]


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_send_delivers_the_message_with_each_format(caller, token_format):
    answer = send(caller, token_format)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token"]["format"] == token_format
    assert body["token"]["id"].startswith("mt_")
    assert body["receiver"]["messageReceived"] == "Hello from the caller"
    assert body["receiver"]["from"] == CALLER.id
    assert body["receiver"]["token"]["id"] == body["token"]["id"]


def test_default_format_comes_from_the_environment(fresh_caller):
    caller = fresh_caller(M2M_TOKEN_FORMAT="jwt")
    assert send(caller).json()["token"]["format"] == "jwt"


def test_fifty_sends_cause_exactly_one_token_creation(fresh_caller, issuer):
    caller = fresh_caller()
    before = creations(issuer)
    answers = [send(caller) for _ in range(50)]
    assert [a.status_code for a in answers] == [200] * 50
    assert len({a.json()["token"]["id"] for a in answers}) == 1
    assert creations(issuer) - before == 1


def test_twenty_concurrent_sends_on_a_cold_cache_create_one_token(fresh_caller, issuer):
    caller = fresh_caller(M2M_TOKEN_FORMAT="jwt")
    before = creations(issuer)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: send(caller), range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert len({a.json()["token"]["id"] for a in answers}) == 1
    assert creations(issuer) - before == 1


def test_short_ttl_is_refreshed_before_expiry_and_no_send_fails(fresh_caller, issuer):
    caller = fresh_caller(M2M_TOKEN_TTL_SECONDS="3", M2M_REFRESH_MARGIN_SECONDS="1")
    before = creations(issuer)
    seen: dict[str, set[str]] = {"opaque": set(), "jwt": set()}
    deadline = time.monotonic() + 4.5  # over two refresh periods (3 s - 1 s margin)
    while time.monotonic() < deadline:
        for token_format in seen:
            answer = send(caller, token_format)
            assert answer.status_code == 200, answer.text
            assert answer.json()["retried_after_401"] is False  # refreshed on its own
            seen[token_format].add(answer.json()["token"]["id"])
        time.sleep(0.1)
    assert len(seen["opaque"]) >= 2 and len(seen["jwt"]) >= 2
    assert creations(issuer) - before == len(seen["opaque"]) + len(seen["jwt"])


def test_revoked_opaque_token_is_replaced_through_the_retry_on_401(caller, issuer):
    first = send(caller, "opaque").json()["token"]["id"]
    revoked = requests.post(
        f"{issuer.url}/v1/m2m_tokens/{first}/revoke",
        headers=SK,
        json={"revocation_reason": "e2e"},
        timeout=5,
    )
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    answer = send(caller, "opaque")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["retried_after_401"] is True and body["token"]["id"] != first
    assert send(caller, "opaque").json()["retried_after_401"] is False  # the new one is reused


def test_caller_without_scope_reports_the_receivers_401(fresh_caller):
    caller = fresh_caller(OUTSIDER.secret_key)
    for token_format in ("opaque", "jwt"):
        answer = send(caller, token_format)
        assert answer.status_code == 502, answer.text
        body = answer.json()
        assert body["error"] == "receiver_rejected_token" and body["dependency"] == "receiver"
        assert body["receiver_status"] == 401 and body["receiver_error"] == "invalid_token"
        assert body["receiver_error_description"]
        assert body["receiver_error_description"] in body["message"]
        assert body["retried_after_401"] is True


def test_rotated_machine_key_stops_working_at_once_and_the_error_says_so(fresh_caller, issuer):
    created = requests.post(
        f"{issuer.url}/v1/machines",
        headers=SK,
        timeout=5,
        json={"name": "e2e-rotating-caller", "scoped_machines": [RECEIVER.id]},
    )
    assert created.status_code == 200, created.text
    machine, old_key = created.json()["id"], created.json()["secret_key"]
    caller = fresh_caller(old_key)
    assert send(caller, "opaque").status_code == 200

    rotated = requests.post(
        f"{issuer.url}/v1/machines/{machine}/secret_key/rotate",
        headers=SK,
        json={"previous_token_ttl": 0},
        timeout=5,
    )
    assert rotated.status_code == 200 and rotated.json()["secret"] != old_key
    direct = requests.post(
        f"{issuer.url}/m2m_tokens",
        json={},
        timeout=5,
        headers={"Authorization": f"Bearer {old_key}"},
    )
    assert direct.status_code == 401  # the issuer itself refuses the old key at once
    answer = send(caller, "jwt")  # no jwt cached yet: the caller must create one with its key
    assert answer.status_code == 502
    body = answer.json()
    assert body["error"] == "machine_secret_key_rejected" and body["dependency"] == "issuer"
    assert "CLERK_MACHINE_SECRET_KEY" in body["message"]
    assert old_key not in answer.text
    assert old_key not in caller.log_text()


class RecordingReceiver:
    """A stand-in receiver in a thread on 127.0.0.1: it records each Authorization header, so
    the test knows the exact token strings the caller sent. It answers 401 to the first
    request (to exercise the caller's retry and its logging) and 200 after that."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        app = Flask("recording_receiver")
        app.post("/receive")(self._receive)
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _receive(self):
        self.authorizations.append(flask_request.headers.get("Authorization", ""))
        if len(self.authorizations) == 1:
            return {"error": "invalid_token"}, 401, {"WWW-Authenticate": 'Bearer error="x"'}
        return {"messageReceived": "ok"}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recording_receiver():
    receiver = RecordingReceiver()
    yield receiver
    receiver.stop()


def test_caller_logs_never_hold_keys_or_tokens(start, issuer, recording_receiver):
    caller = start("caller_app", caller_env(issuer, recording_receiver))
    answers = [send(caller, "opaque"), send(caller, "jwt")]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["retried_after_401"] is True  # the 401 path was logged too
    tokens = {auth.removeprefix("Bearer ") for auth in recording_receiver.authorizations}
    assert len(tokens) == 3  # the opaque token answered 401, its replacement, the jwt
    log = caller.log_text()
    for answer in answers:  # the log is live and names tokens by id...
        assert answer.json()["token"]["id"] in log
    for token in tokens:  # ...but never holds a token string itself
        assert token.startswith(("mt_", "ey")) and token not in log
    assert CALLER.secret_key not in log
    assert "Bearer" not in log


def test_stopped_receiver_is_a_502_and_stopped_issuer_a_503_naming_who_failed(start, start_issuer):
    issuer = start_issuer()
    receiver = start("receiver_app", receiver_env(issuer))
    # One worker: one token cache, so the opaque token cached below serves every later send.
    caller = start("caller_app", caller_env(issuer, receiver), server="gunicorn", workers=1)
    assert send(caller, "opaque").status_code == 200

    receiver.stop()
    answer = send(caller, "opaque")
    assert answer.status_code == 502
    assert answer.json()["error"] == "receiver_unreachable"
    assert answer.json()["dependency"] == "receiver" and "receiver" in answer.json()["message"]
    receiver.start()
    assert send(caller, "opaque").status_code == 200

    issuer.stop()
    # The caller still holds an opaque token, but the receiver cannot verify it without the
    # issuer: the receiver is the one unavailable, and its Retry-After is passed on.
    answer = send(caller, "opaque")
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["error"] == "receiver_unavailable" and body["dependency"] == "receiver"
    assert body["receiver_status"] == 503 and body["receiver_error_description"]
    assert 1 <= int(answer.headers["Retry-After"]) <= 60

    answer = send(caller, "jwt")  # not cached (cold cache): a token must be created
    assert answer.status_code == 503
    assert answer.json()["error"] == "issuer_unavailable"
    assert answer.json()["dependency"] == "issuer" and "issuer" in answer.json()["message"]
    assert int(answer.headers["Retry-After"]) >= 1
    assert "Traceback" not in caller.log_text()
