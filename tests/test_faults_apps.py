"""The caller and the receiver against a mock issuer that fails on purpose, as real processes.

The caller's backoff and single flight hold under injected 429s, 503s, delays and hangs (each
rule counts the requests it sees, so a retry storm would show); the receiver answers 503
with Retry-After while opaque verification fails, keeps verifying JWTs, and recovers by itself.
The last test scans the logs of every process this module started for every key and token.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from xprocess.xprocess import XPROCESS_BLOCK_DELIMITER

from tests.faults_client import IssuerFaults
from tests.harness import RunningApp, free_port, start_app
from tests.log_scan import assert_no_log_holds_a_secret, misplaced_secrets
from tests.seed import CALLER, OUTSIDER, RECEIVER, TEST_SECRET_KEY, issuer_env

pytestmark = pytest.mark.e2e

TIMEOUT = 15
CREATE = "POST /m2m_tokens"
VERIFY = "POST /m2m_tokens/verify"
STARTED: list[RunningApp] = []  # every process of this module, for the log scan at the end
MINTED: list[str] = []  # every token the tests minted themselves


@pytest.fixture(scope="module")
def issuer(xprocess, tmp_path_factory):
    port = free_port()
    env = issuer_env(
        tmp_path_factory.mktemp("faults-apps"), MOCK_ISSUER_URL=f"http://127.0.0.1:{port}"
    )
    app = start_app(xprocess, "mock_issuer", env, port=port)  # threaded: a hang blocks one thread
    STARTED.append(app)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def receiver(xprocess, issuer):
    env = {
        "CLERK_API_URL": issuer.url,
        "CLERK_MACHINE_SECRET_KEY": RECEIVER.secret_key,
        "CLERK_MACHINE_ID": RECEIVER.id,
        "M2M_VERIFY_CACHE_SECONDS": "0",  # every opaque token goes to the issuer
    }
    app = start_app(xprocess, "tests.quick_receiver", env)  # issuer timeout: 1 s
    STARTED.append(app)
    yield app
    app.stop()


@pytest.fixture
def faults(issuer) -> Any:
    faults = IssuerFaults(issuer.url, TEST_SECRET_KEY)
    yield faults
    faults.clear()


@pytest.fixture
def new_caller(start, issuer, receiver):
    """A caller with a cold token cache and its own settings."""

    def _new_caller(**extra: str) -> RunningApp:
        env = {
            "CLERK_API_URL": issuer.url,
            "CLERK_MACHINE_SECRET_KEY": CALLER.secret_key,
            "RECEIVER_URL": receiver.url,
            "M2M_TOKEN_TTL_SECONDS": "300",
            **extra,
        }
        app = start("caller_app", env)
        STARTED.append(app)
        return app

    return _new_caller


def run_log(app: RunningApp) -> str:
    """The log of the process's latest start only (xprocess appends runs to one file, and a
    port, hence a log, can be reused from an earlier test session)."""
    return app.log_text().rsplit(XPROCESS_BLOCK_DELIMITER, 1)[-1]


def mint_object(issuer: RunningApp, machine=CALLER, **body: Any) -> dict[str, Any]:
    """A new token's object (`id`, `token`, ...), its secret remembered for the log scan."""
    headers = {"Authorization": f"Bearer {machine.secret_key}"}
    resp = requests.post(f"{issuer.url}/v1/m2m_tokens", json=body, timeout=TIMEOUT, headers=headers)
    assert resp.status_code == 201, resp.text
    MINTED.append(resp.json()["token"])
    return resp.json()


def mint(issuer: RunningApp, machine=CALLER, **body: Any) -> str:
    return mint_object(issuer, machine, **body)["token"]


def receive(receiver: RunningApp, token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.post(
        f"{receiver.url}/receive", json={"message": "hi"}, timeout=TIMEOUT, headers=headers
    )


def send(caller: RunningApp, fmt: str = "opaque") -> requests.Response:
    return requests.get(f"{caller.url}/send?format={fmt}", timeout=TIMEOUT + 10)


def burst(fn, n: int) -> list[Any]:
    """Run `fn` n times at once (threads released together by a barrier)."""
    barrier = threading.Barrier(n)

    def one(_: int) -> Any:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


# ---- the caller ----


def test_caller_waits_out_429s_with_retry_after_and_sends_once_they_stop(new_caller, faults):
    caller = new_caller()
    faults.set(CREATE, status=429, retry_after=1, count=2)
    resp = send(caller)
    assert resp.status_code == 200, resp.text
    rule = faults.rule()
    assert (rule["matched"], rule["faulted"]) == (3, 2)  # two 429s, then the creation
    assert run_log(caller).count("the issuer answered 429; retry") == 2


def test_concurrent_sends_during_an_outage_make_one_bounded_retry_sequence(new_caller, faults):
    """Twelve sends at once on a cold cache while every creation answers 503: one flight of
    three attempts (not 12 x 3), every send answers 503 with Retry-After, and the first send
    after the outage creates exactly one token."""
    caller = new_caller(M2M_ISSUER_MAX_ATTEMPTS="3")
    faults.set(CREATE, status=503, retry_after=1)
    answers = burst(lambda: send(caller), 12)
    assert [r.status_code for r in answers] == [503] * 12
    assert all(r.headers["Retry-After"].isdigit() for r in answers)
    assert {r.json()["error"] for r in answers} == {"issuer_unavailable"}
    assert faults.rule()["matched"] == 3

    faults.set(CREATE)  # the outage ends; the rule now only counts creations
    assert [r.status_code for r in burst(lambda: send(caller), 6)] == [200] * 6
    assert faults.rule()["matched"] == 1


def test_slow_issuer_is_waited_for_and_concurrent_sends_share_one_creation(new_caller, faults):
    caller = new_caller()
    faults.set(CREATE, delay_seconds=1.5)
    answers = burst(lambda: send(caller, "jwt"), 8)
    assert [r.status_code for r in answers] == [200] * 8
    assert len({r.json()["token"]["id"] for r in answers}) == 1
    assert faults.rule()["matched"] == 1


def test_hanging_issuer_is_abandoned_at_the_timeout_and_the_retry_succeeds(new_caller, faults):
    caller = new_caller(M2M_HTTP_TIMEOUT_SECONDS="1.5")
    faults.set(CREATE, delay_seconds=30, count=1)
    started = time.monotonic()
    resp = send(caller)
    assert resp.status_code == 200, resp.text
    assert time.monotonic() - started < 25  # it did not wait for the hang to end
    assert (faults.rule()["matched"], faults.rule()["faulted"]) == (2, 1)
    assert "ReadTimeout" in run_log(caller)


def test_every_second_creation_failing_never_reaches_the_sender(new_caller, faults):
    caller = new_caller()
    faults.set(CREATE, status=500, share=0.5)
    assert send(caller, "opaque").status_code == 200  # 1st creation passes
    assert send(caller, "jwt").status_code == 200  # 2nd answers 500, the retry passes
    rule = faults.rule()
    assert (rule["matched"], rule["faulted"]) == (3, 1)


# ---- the receiver ----


def test_receiver_answers_503_while_opaque_verification_fails_and_recovers_by_itself(
    issuer, receiver, faults
):
    opaque, jwt_token = mint(issuer), mint(issuer, token_format="jwt")
    assert receive(receiver, jwt_token).status_code == 200  # keys cached
    faults.set(VERIFY, status=503, retry_after=3)
    for _ in range(3):
        resp = receive(receiver, opaque)
        assert resp.status_code == 503
        assert resp.headers["Retry-After"].isdigit()
        assert "WWW-Authenticate" not in resp.headers  # not the token's fault
        assert resp.json()["error"] == "temporarily_unavailable"
        assert receive(receiver, jwt_token).status_code == 200  # JWTs need no issuer
    assert faults.rule()["matched"] == 3  # one verification per request: the receiver never retries
    faults.clear()
    assert receive(receiver, opaque).status_code == 200  # no restart needed


def test_receiver_passes_on_the_issuers_retry_after_when_rate_limited(issuer, receiver, faults):
    opaque = mint(issuer)
    faults.set(VERIFY, status=429, retry_after=7)
    resp = receive(receiver, opaque)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "7"


def test_issuer_failing_everywhere_leaves_jwt_verification_working(issuer, receiver, faults):
    opaque, jwt_token = mint(issuer), mint(issuer, token_format="jwt")
    receive(receiver, jwt_token)
    faults.set("*", status=500)
    assert receive(receiver, jwt_token).status_code == 200
    assert receive(receiver, opaque).status_code == 503
    forged = jwt_token[:-4] + ("AAAA" if not jwt_token.endswith("AAAA") else "BBBB")
    assert receive(receiver, forged).status_code == 401  # still checked, not waved through


def test_issuer_hanging_on_verification_gives_a_503_at_the_receivers_timeout(
    issuer, receiver, faults
):
    opaque = mint(issuer)
    faults.set(VERIFY, delay_seconds=30)
    started = time.monotonic()
    resp = receive(receiver, opaque)
    elapsed = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == "temporarily_unavailable"
    assert resp.headers["Retry-After"].isdigit()
    assert faults.rule()["matched"] == 1  # one verification, abandoned, never retried
    assert elapsed < 5  # gave up at its 1 s timeout, not at the hang's end (30 s)


def test_send_through_a_failing_verification_names_the_receiver(new_caller, faults):
    caller = new_caller()
    faults.set(VERIFY, status=503)
    resp = send(caller)
    assert resp.status_code == 503  # the receiver cannot verify: a dependency, not a bad token
    body = resp.json()
    assert body["error"] == "receiver_unavailable" and body["dependency"] == "receiver"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    faults.clear()
    assert send(caller).status_code == 200


# ---- secrets in logs ----


def test_no_log_of_any_process_holds_a_key_or_a_token(issuer, receiver, new_caller, faults, start):
    """After everything above (or on its own, this short run): every log of the issuer, the
    receiver and each caller, scanned for the keys, every token minted here, and anything
    shaped like an opaque token secret, a JWT or a key (the callers' own tokens). Keys and
    tokens are also sent in query strings, paths and headers to every app, one of them under
    gunicorn with its access log on: servers log request lines, and no token may be in one."""
    access_logged = start(
        "receiver_app",
        {
            "CLERK_API_URL": issuer.url,
            "CLERK_MACHINE_SECRET_KEY": RECEIVER.secret_key,
            "CLERK_MACHINE_ID": RECEIVER.id,
            "GUNICORN_CMD_ARGS": "--access-logfile -",
        },
        server="gunicorn",
        workers=1,
    )
    STARTED.append(access_logged)
    caller = new_caller()
    loose = [mint(issuer), mint(issuer, token_format="jwt"), TEST_SECRET_KEY, CALLER.secret_key]
    for app in (issuer, receiver, caller, access_logged):
        misplaced_secrets(app, loose)
    assert "GET /receive?" in run_log(access_logged)  # its access log is on and was scanned
    for token_format in ("opaque", "jwt"):
        assert send(caller, token_format).status_code == 200
    revoked = mint_object(issuer)
    sk = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
    url = f"{issuer.url}/m2m_tokens/{revoked['id']}/revoke"
    assert requests.post(url, json={}, headers=sk, timeout=TIMEOUT).status_code == 200
    # Each rejection path runs for real (revoked, out of scope, unknown), so its logging is scanned.
    assert receive(receiver, revoked["token"]).status_code == 401
    assert receive(receiver, mint(issuer, OUTSIDER)).status_code == 401
    assert receive(receiver, revoked["token"][:-3] + "zzz").status_code == 401
    faults.set(CREATE, status=503, count=1)
    assert send(new_caller(), "jwt").status_code == 200

    secrets = {TEST_SECRET_KEY, CALLER.secret_key, RECEIVER.secret_key, OUTSIDER.secret_key}
    assert len(STARTED) >= 4
    assert_no_log_holds_a_secret(STARTED, secrets | set(MINTED))
