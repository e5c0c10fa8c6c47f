"""The receiver and the mock issuer as real processes: both token formats, revocation, scopes,
an issuer outage and a signing-key rotation. Two issuer-backed receivers, one issuer, per module."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
import requests

from tests.harness import RunningApp, free_port, start_app
from tests.quick_receiver import JWKS_COOLDOWN, JWKS_LIFESPAN
from tests.seed import CALLER, OUTSIDER, RECEIVER, TEST_SECRET_KEY, issuer_env

pytestmark = pytest.mark.e2e

TIMEOUT = 10
# The receiver runs as tests.quick_receiver: its JWKS cooldown is short, so a rotation is seen
# quickly, and so is its lifespan, so the outage test also proves the last good keys are kept.
QUICK_RECEIVER = "tests.quick_receiver"


@pytest.fixture(scope="module")
def issuer(xprocess, tmp_path_factory) -> Iterator[RunningApp]:
    port = free_port()
    env = issuer_env(
        tmp_path_factory.mktemp("receiver-e2e"), MOCK_ISSUER_URL=f"http://127.0.0.1:{port}"
    )
    running = start_app(xprocess, "mock_issuer", env, port=port)
    yield running
    running.stop()


def receiver_env(issuer: RunningApp, **extra: str) -> dict[str, str]:
    return {
        "CLERK_API_URL": issuer.url,
        "CLERK_MACHINE_SECRET_KEY": RECEIVER.secret_key,
        "CLERK_MACHINE_ID": RECEIVER.id,
        "M2M_JWT_CACHE_SECONDS": "0",  # every JWT is checked against the keys, none remembered
        **extra,
    }


@pytest.fixture(scope="module")
def receiver(xprocess, issuer) -> Iterator[RunningApp]:
    """Under gunicorn with one worker, so every request sees the same JWKS cache."""
    running = start_app(
        xprocess, QUICK_RECEIVER, receiver_env(issuer), server="gunicorn", workers=1
    )
    yield running
    running.stop()


def mint(issuer: RunningApp, machine=CALLER, **body) -> dict:
    response = requests.post(
        f"{issuer.url}/v1/m2m_tokens",
        json=body,
        headers={"Authorization": f"Bearer {machine.secret_key}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return response.json()


def send(receiver: RunningApp, token: str, message: str = "Hello from the caller"):
    return requests.post(
        f"{receiver.url}/receive",
        json={"message": message},
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_both_token_formats_are_accepted(issuer, receiver, token_format):
    token = mint(issuer, token_format=token_format)
    response = send(receiver, token["token"])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "messageReceived": "Hello from the caller",
        "from": CALLER.id,
        "token": {
            "id": token["id"],
            "format": token_format,
            "claims": {},
            "scopes": [RECEIVER.id],
            "expiration": token["expiration"],
        },
    }


def test_custom_claims_reach_the_handler(issuer, receiver):
    for token_format in ("opaque", "jwt"):
        token = mint(issuer, token_format=token_format, claims={"role": "billing"})["token"]
        assert send(receiver, token).json()["token"]["claims"] == {"role": "billing"}


def test_opaque_token_is_rejected_right_after_revocation(issuer, receiver):
    token = mint(issuer)
    assert send(receiver, token["token"]).status_code == 200
    revoked = requests.post(
        f"{issuer.url}/v1/m2m_tokens/{token['id']}/revoke",
        json={"revocation_reason": "test"},
        headers={"Authorization": f"Bearer {CALLER.secret_key}"},
        timeout=TIMEOUT,
    )
    assert revoked.status_code == 200, revoked.text
    response = send(receiver, token["token"])
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="receiver", error="invalid_token", '
        'error_description="token is invalid, expired or revoked"'
    )


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_machine_outside_the_scopes_is_rejected(issuer, receiver, token_format):
    token = mint(issuer, OUTSIDER, token_format=token_format)["token"]
    response = send(receiver, token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_old_and_new_jwts_verify_after_signing_key_rotation(issuer, receiver):
    old = mint(issuer, token_format="jwt")["token"]
    assert send(receiver, old).status_code == 200
    rotated = requests.post(
        f"{issuer.url}/v1/jwks/rotate",
        headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"},
        timeout=TIMEOUT,
    )
    assert rotated.status_code == 200, rotated.text
    new = mint(issuer, token_format="jwt")["token"]
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    time.sleep(
        JWKS_COOLDOWN
    )  # the receiver fetched its keys just now: one cooldown to see the new kid
    assert send(receiver, new).status_code == 200
    assert send(receiver, old).status_code == 200


def test_with_the_issuer_stopped_jwts_verify_and_opaque_tokens_get_503(issuer, receiver):
    jwt_token = mint(issuer, token_format="jwt")["token"]
    opaque_token = mint(issuer)["token"]
    assert send(receiver, jwt_token).status_code == 200
    issuer.stop()
    try:
        time.sleep(JWKS_LIFESPAN)  # the receiver's keys are now stale and cannot be refreshed
        assert send(receiver, jwt_token).status_code == 200
        response = send(receiver, opaque_token)
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["error"] == "temporarily_unavailable"
        assert send(receiver, jwt_token).status_code == 200
    finally:
        issuer.start()
    assert send(receiver, opaque_token).status_code == 200


def test_receiver_with_a_rejected_key_answers_503_and_logs_a_config_error(xprocess, issuer):
    env = receiver_env(issuer, CLERK_MACHINE_SECRET_KEY="ak_" + "0" * 40)
    misconfigured = start_app(xprocess, "receiver_app", env)
    try:
        token = mint(issuer)["token"]
        response = send(misconfigured, token)
        assert response.status_code == 503
        assert "WWW-Authenticate" not in response.headers
        log = misconfigured.log_text()
        assert "CLERK_MACHINE_SECRET_KEY" in log
        assert token not in log and env["CLERK_MACHINE_SECRET_KEY"] not in log
    finally:
        misconfigured.stop()


def test_receiver_log_holds_no_tokens_or_keys(issuer, receiver):
    tokens = [mint(issuer, token_format=f)["token"] for f in ("opaque", "jwt")]
    for token in tokens:
        assert send(receiver, token).status_code == 200
        # One character changed mid-signature (or mid-secret): always a different token.
        tampered = token[:-10] + ("A" if token[-10] != "A" else "B") + token[-9:]
        assert send(receiver, tampered).status_code == 401
    log = receiver.log_text()
    for secret in (*tokens, RECEIVER.secret_key):
        assert secret not in log
