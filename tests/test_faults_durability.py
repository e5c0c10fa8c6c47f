"""Crashes and races through real gunicorn workers: kill -9 during a storm of creations, and
revocation racing verification of the same token."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psutil
import pytest
import requests
from xprocess.xprocess import XPROCESS_BLOCK_DELIMITER

from tests.faults_client import IssuerFaults
from tests.harness import free_port, wait_until
from tests.seed import CALLER, RECEIVER, TEST_SECRET_KEY, issuer_env

pytestmark = pytest.mark.e2e

SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
AK = {"Authorization": f"Bearer {CALLER.secret_key}"}
TIMEOUT = 10


def verify(url: str, token: str, key: str = RECEIVER.secret_key) -> requests.Response:
    return requests.post(
        f"{url}/m2m_tokens/verify",
        json={"token": token},
        timeout=TIMEOUT,
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.fixture
def gunicorn_issuer(start, tmp_path):
    """A seeded issuer with its own database under gunicorn with three workers."""
    port = free_port()
    env = issuer_env(tmp_path / "issuer", MOCK_ISSUER_URL=f"http://127.0.0.1:{port}")
    return start("mock_issuer", env, server="gunicorn", workers=3, port=port)


def run_log(app) -> str:
    """The log of the process's latest start only (xprocess appends runs to one file)."""
    return app.log_text().rsplit(XPROCESS_BLOCK_DELIMITER, 1)[-1]


def integrity(db_path: str) -> tuple[str, list]:
    conn = sqlite3.connect(db_path)
    try:
        return (
            conn.execute("PRAGMA integrity_check").fetchone()[0],
            conn.execute("PRAGMA foreign_key_check").fetchall(),
        )
    finally:
        conn.close()


def test_every_token_answered_201_survives_kill_9_during_a_creation_storm(gunicorn_issuer):
    """Four threads create opaque and JWT tokens through three gunicorn workers; the issuer is
    SIGKILLed mid-storm and restarted on the same database. Every token whose creation was
    answered 201 still verifies, ids are distinct, and SQLite's integrity check passes."""
    issuer = gunicorn_issuer
    answered: list[dict] = []
    lock = threading.Lock()
    stop = threading.Event()

    def storm(n: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            fmt = "jwt" if (n + i) % 3 == 0 else "opaque"
            i += 1
            try:
                resp = session.post(
                    f"{issuer.url}/v1/m2m_tokens", json={"token_format": fmt}, headers=AK, timeout=2
                )
            except requests.RequestException:
                continue  # the crash: this creation was never answered
            if resp.status_code == 201:
                with lock:
                    answered.append(resp.json())

    threads = [threading.Thread(target=storm, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(answered) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    issuer.kill()  # SIGKILL the arbiter and every worker, mid-storm
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(answered) >= 60

    issuer.start()
    assert len({t["id"] for t in answered}) == len(answered)
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda t: verify(issuer.url, t["token"]).status_code, answered))
    assert statuses == [200] * len(answered)
    assert {"opaque", "jwt"} == {
        "jwt" if t["token"].startswith("eyJ") else "opaque" for t in answered
    }
    assert integrity(issuer.env["MOCK_ISSUER_DB"]) == ("ok", [])


@dataclass
class Attempt:
    sent: float
    status: int


def test_verification_never_passes_once_a_parallel_revoke_has_answered(gunicorn_issuer):
    """Three workers; for each of 15 tokens, four threads keep verifying it while the main
    thread revokes it. A verification sent after the revoke was answered must get 404."""
    issuer = gunicorn_issuer
    late_accepts, accepted_before, rejected_after = 0, 0, 0
    for _ in range(15):
        token = requests.post(
            f"{issuer.url}/v1/m2m_tokens", json={}, headers=AK, timeout=TIMEOUT
        ).json()
        attempts: list[Attempt] = []
        lock = threading.Lock()
        revoked_at: list[float] = []

        def hammer(
            token: str = token["token"], attempts=attempts, lock=lock, revoked_at=revoked_at
        ):
            session = requests.Session()
            while not revoked_at or time.monotonic() < revoked_at[0] + 0.15:
                sent = time.monotonic()
                status = session.post(
                    f"{issuer.url}/m2m_tokens/verify",
                    json={"token": token},
                    headers=SK,
                    timeout=TIMEOUT,
                ).status_code
                with lock:
                    attempts.append(Attempt(sent, status))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(random.uniform(0.02, 0.08))
        resp = requests.post(
            f"{issuer.url}/m2m_tokens/{token['id']}/revoke", json={}, headers=SK, timeout=TIMEOUT
        )
        revoked_at.append(time.monotonic())
        assert resp.status_code == 200 and resp.json()["revoked"] is True
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        assert {a.status for a in attempts} <= {200, 404}
        late_accepts += sum(a.sent > revoked_at[0] and a.status == 200 for a in attempts)
        accepted_before += sum(a.status == 200 for a in attempts)
        rejected_after += sum(a.sent > revoked_at[0] and a.status == 404 for a in attempts)
    assert late_accepts == 0
    assert accepted_before > 0 and rejected_after > 0  # the race really was run


def test_env_faults_apply_once_are_shared_by_workers_and_survive_a_worker_replacement(
    start, tmp_path
):
    """Three gunicorn workers started with MOCK_ISSUER_FAULTS and MOCK_ISSUER_RATE_LIMIT: one
    log line turns them on, the share and the rate limit are counted across workers, and a
    worker gunicorn replaces after a crash keeps faults set at run time."""
    if (left := 3600 - time.time() % 3600) < 10:
        time.sleep(left + 0.1)  # the rate-limit window is this clock hour
    port = free_port()
    rules = {"rules": [{"route": "GET /v1/jwks", "status": 503, "share": 0.5}]}
    env = issuer_env(
        tmp_path / "issuer",
        MOCK_ISSUER_URL=f"http://127.0.0.1:{port}",
        MOCK_ISSUER_FAULTS=json.dumps(rules),
        MOCK_ISSUER_RATE_LIMIT="30/3600s",
    )
    issuer = start("mock_issuer", env, server="gunicorn", workers=3, port=port)
    assert run_log(issuer).count("fault injection ON from the environment") == 1

    def get_jwks(_: int) -> int:
        return requests.get(f"{issuer.url}/v1/jwks", headers=SK, timeout=TIMEOUT).status_code

    def create(_: int) -> requests.Response:
        return requests.post(f"{issuer.url}/v1/m2m_tokens", json={}, headers=AK, timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=5) as pool:
        jwks = list(pool.map(get_jwks, range(10)))
        creations = list(pool.map(create, range(25)))
    assert sorted(jwks) == [200] * 5 + [503] * 5
    assert sorted(r.status_code for r in creations) == [201] * 20 + [429] * 5
    assert all(r.headers["Retry-After"].isdigit() for r in creations if r.status_code == 429)

    faults = IssuerFaults(issuer.url, TEST_SECRET_KEY)
    faults.set("POST /m2m_tokens", status=500)
    assert wait_until(lambda: run_log(issuer).count("mock_issuer ready") == 3, timeout=20)
    worker = psutil.Process(issuer.pid).children()[0]
    worker.kill()
    worker.wait(timeout=10)
    assert wait_until(lambda: run_log(issuer).count("mock_issuer ready") == 4, timeout=20)
    assert faults.rule()["route"] == "POST /m2m_tokens"  # not reset to the environment's
