"""The mock issuer as real processes (tests/harness.py): the Flask dev server, restarts on the
same database, several gunicorn workers sharing state, and the rotate-signing-key command."""

from __future__ import annotations

import jwt
import pytest
import requests

from tests.conftest import CALLER, RECEIVER, TEST_SECRET_KEY

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


def test_dev_server_serves_the_api_and_logs_where_it_listens(start_issuer):
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
