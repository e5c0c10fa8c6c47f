"""The mock issuer as real processes (tests/harness.py): the Flask dev server, restarts on the
same database, several gunicorn workers sharing state, and the rotate-signing-key command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from tests.harness import REPO_ROOT, base_env, free_port
from tests.seed import CALLER, RECEIVER, TEST_SECRET_KEY, issuer_env, seed_document

pytestmark = pytest.mark.e2e

SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
CALLER_AUTH = {"Authorization": f"Bearer {CALLER.secret_key}"}
RECEIVER_AUTH = {"Authorization": f"Bearer {RECEIVER.secret_key}"}
TIMEOUT = 10


def mint(url: str, **body) -> dict:
    resp = requests.post(f"{url}/v1/m2m_tokens", json=body, headers=CALLER_AUTH, timeout=TIMEOUT)
    assert resp.status_code == 201, resp.text
    return resp.json()


def verify(url: str, token: str) -> requests.Response:
    return requests.post(
        f"{url}/m2m_tokens/verify", json={"token": token}, headers=RECEIVER_AUTH, timeout=TIMEOUT
    )


def jwks(url: str) -> dict:
    return requests.get(f"{url}/.well-known/jwks.json", timeout=TIMEOUT).json()


def test_dev_server_serves_the_api_logs_safely_and_picks_up_a_cli_key_rotation(start_issuer):
    issuer = start_issuer()
    opaque = mint(issuer.url)
    assert verify(issuer.url, opaque["token"]).status_code == 200
    token = mint(issuer.url, token_format="jwt")["token"]
    header = jwt.get_unverified_header(token)
    assert header["cat"] == "cl_B7d4PD333AAA" and header["typ"] == "JWT"
    keys = requests.get(f"{issuer.url}/v1/jwks", headers=SK, timeout=TIMEOUT).json()
    assert keys == jwks(issuer.url)
    claims = jwt.decode(
        token,
        jwt.PyJWK(keys["keys"][0]).key,
        algorithms=["RS256"],
        audience=RECEIVER.id,
        issuer=issuer.url,
    )
    assert claims["sub"] == CALLER.id and claims["scopes"] == RECEIVER.id
    log = issuer.log_text()
    assert f"Clerk M2M API for {issuer.url}" in log
    assert f"Running on {issuer.url}" in log
    for secret in (opaque["token"], token, CALLER.secret_key, RECEIVER.secret_key, TEST_SECRET_KEY):
        assert secret not in log

    # `flask --app mock_issuer rotate-signing-key` beside the running server: the server signs
    # with the new key from its next token on, and the old token still verifies.
    old = token
    env = base_env()
    env.update(issuer.env)
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "mock_issuer", "rotate-signing-key"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kids = [k["kid"] for k in jwks(issuer.url)["keys"]]
    # active (new), retired (signed `old`, still live), next (published ahead of use)
    assert len(kids) == 3 and kids[0] in result.stdout
    new = mint(issuer.url, token_format="jwt")["token"]
    assert jwt.get_unverified_header(new)["kid"] == kids[0]
    assert verify(issuer.url, old).status_code == 200
    assert verify(issuer.url, new).status_code == 200


def test_restart_keeps_machines_tokens_and_signing_keys(start_issuer):
    """Stop (and then crash) the issuer and start it again on the same database: everything
    created before is still there and earlier tokens still verify."""
    issuer = start_issuer()
    created = requests.post(
        f"{issuer.url}/v1/machines",
        json={"name": "survivor", "scoped_machines": [RECEIVER.id]},
        headers=SK,
        timeout=TIMEOUT,
    ).json()
    opaque = mint(issuer.url, min_remaining_ttl_seconds=60)
    jwt_token = mint(issuer.url, token_format="jwt")["token"]
    keys_before = jwks(issuer.url)

    issuer.restart()
    assert (
        requests.get(
            f"{issuer.url}/v1/machines/{created['id']}", headers=SK, timeout=TIMEOUT
        ).json()["name"]
        == "survivor"
    )
    assert verify(issuer.url, opaque["token"]).status_code == 200
    assert verify(issuer.url, jwt_token).status_code == 200
    assert jwks(issuer.url) == keys_before
    second = mint(issuer.url, min_remaining_ttl_seconds=60)  # reuse works across restarts too
    assert second["id"] == opaque["id"]

    issuer.kill()  # SIGKILL: committed transactions must survive a crash as well
    issuer.start()
    assert verify(issuer.url, opaque["token"]).status_code == 200
    key = {"Authorization": f"Bearer {created['secret_key']}"}
    resp = requests.post(f"{issuer.url}/v1/m2m_tokens", json={}, headers=key, timeout=TIMEOUT)
    assert resp.status_code == 201
    listed = requests.get(
        f"{issuer.url}/v1/machines?query=survivor", headers=SK, timeout=TIMEOUT
    ).json()
    assert listed["total_count"] == 1


def test_gunicorn_workers_share_all_state(start, tmp_path):
    """Four workers started together create one instance id, one signing key and one copy of
    each seeded machine (a name-only seed entry would duplicate under a race); tokens minted
    through any worker verify through any other, and usage counts every request exactly once."""
    seed = tmp_path / "race-seed.json"
    seed.write_text(
        json.dumps({"machines": [*seed_document()["machines"], {"name": "named-only"}]})
    )
    port = free_port()
    env = issuer_env(tmp_path / "gunicorn", MOCK_ISSUER_URL=f"http://127.0.0.1:{port}")
    env["MOCK_ISSUER_SEED"] = str(seed)
    issuer = start("mock_issuer", env, server="gunicorn", workers=4, port=port)
    n = 120
    with ThreadPoolExecutor(max_workers=8) as pool:
        created = list(pool.map(lambda _: mint(issuer.url), range(n)))
        statuses = list(pool.map(lambda t: verify(issuer.url, t["token"]).status_code, created))
    assert statuses == [200] * n
    assert len({t["id"] for t in created}) == n

    machines = requests.get(f"{issuer.url}/v1/machines?limit=100", headers=SK, timeout=TIMEOUT)
    names = [m["name"] for m in machines.json()["data"]]
    assert sorted(names) == sorted(["test-caller", "test-receiver", "test-outsider", "named-only"])
    assert len({m["instance_id"] for m in machines.json()["data"]}) == 1
    assert len(jwks(issuer.url)["keys"]) == 2  # one active and one next key, not one per worker

    totals = requests.get(f"{issuer.url}/v1/usage", headers=SK, timeout=TIMEOUT).json()["totals"]
    assert totals["creations"]["opaque"] == n
    assert totals["verifications"]["opaque"] == {"ok": n, "failed": 0}
    pids = set(re.findall(r"mock_issuer ready \(pid (\d+)\)", issuer.log_text()))
    assert len(pids) == 4
