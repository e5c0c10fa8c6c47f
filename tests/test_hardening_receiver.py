"""Second hardening pass on the receiver (issue 13): a JWT signed with a trusted key but
carrying times the code cannot handle, or shaped like a Clerk session token, is a 401
`invalid_token`, never a 5xx and never accepted."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import receiver_app

API_URL = "http://127.0.0.1:9"  # never contacted: keys come from CLERK_JWT_KEY
RECEIVER_ID = "mch_hardreceiver000000000000000"
CALLER_ID = "mch_hardcaller00000000000000000"
M2M_CATEGORY = "cl_B7d4PD333AAA"
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.fixture
def client(monkeypatch):
    """A receiver verifying JWTs with a static PEM key: no network, no developer settings."""
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")
    for name in [n for n in os.environ if n.startswith(("CLERK_", "M2M_"))]:
        if name != "M2M_SKIP_DOTENV":
            monkeypatch.delenv(name)
    app = receiver_app.create_app(
        {
            "CLERK_API_URL": API_URL,
            "CLERK_MACHINE_SECRET_KEY": "ak_hardreceiver" + "5" * 30,
            "CLERK_MACHINE_ID": RECEIVER_ID,
            "CLERK_JWT_KEY": PUBLIC_PEM,
        }
    )
    app.testing = True
    return app.test_client()


def signed(payload_json: str, cat: str | None = M2M_CATEGORY) -> str:
    """A JWT over exactly this payload text (so it can hold 1e400 or a string time), signed
    with the receiver's trusted key."""
    headers: dict[str, Any] = {"typ": "JWT"} | ({"cat": cat} if cat else {})
    return jwt.api_jws.encode(
        payload_json.encode(), SIGNING_KEY, algorithm="RS256", headers=headers
    )


def payload(**times: str) -> str:
    """M2M claims as JSON text with `exp`, `nbf`, `iat` given as raw JSON fragments."""
    now = int(time.time())
    claims = {
        "iss": API_URL,
        "sub": CALLER_ID,
        "jti": "mt_" + "b" * 32,
        "aud": [RECEIVER_ID],
        "scopes": RECEIVER_ID,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    }
    fields = {name: json.dumps(value) for name, value in claims.items()}
    fields.update(times)
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"


def receive(client, token: str):
    return client.post(
        "/receive", json={"message": "hi"}, headers={"Authorization": f"Bearer {token}"}
    )


def test_a_well_formed_token_is_accepted(client):
    assert receive(client, signed(payload())).status_code == 200


NOW = int(time.time())
BAD_TIMES = {
    "exp as a string": {"exp": f'"{NOW + 60}"'},
    "exp infinite (1e400)": {"exp": "1e400"},
    "exp absurdly large": {"exp": "1e300"},
    "exp past year 9999": {"exp": "253402300800"},
    "exp a 400-digit integer": {"exp": "1" + "0" * 400},
    "exp a boolean": {"exp": "true"},
    "exp NaN": {"exp": "NaN"},
    "exp an object": {"exp": '{"a": 1}'},
    "nbf as a string": {"nbf": f'"{NOW}"'},
    "nbf infinite": {"nbf": "-1e400"},
    "iat as a string": {"iat": f'"{NOW}"'},
    "iat infinite": {"iat": "1e400"},
    "iat absurdly negative": {"iat": "-1e300"},
}


@pytest.mark.parametrize("times", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_times_that_are_not_numeric_dates_in_range_are_invalid_token(client, times):
    resp = receive(client, signed(payload(**times)))
    assert resp.status_code == 401, resp.text
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


# ---- a Clerk session token is not an M2M token ----


def session_style(**overrides: Any) -> str:
    """Claims shaped like a Clerk session token: a user subject, a session id, an `azp`."""
    now = int(time.time())
    claims = {
        "iss": API_URL,
        "sub": "user_2hardsession000000000000",
        "sid": "sess_2hard0000",
        "azp": "https://app.example.com",
        "jti": "mt_" + "c" * 32,
        "aud": [RECEIVER_ID],
        "scopes": RECEIVER_ID,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return json.dumps({k: v for k, v in claims.items() if v is not None})


SESSION_LIKE = {
    # Clerk's Python SDK 7.0.0 would sign this in as a session of `user_...`: we must not.
    "user subject, no cat": (session_style(), None),
    "user subject, no audience": (session_style(aud=None, scopes=None), None),
    "user subject, M2M cat": (session_style(), M2M_CATEGORY),
    "machine subject, session cat": (session_style(sub=CALLER_ID), "cl_session_token"),
}


@pytest.mark.parametrize(("claims_json", "cat"), SESSION_LIKE.values(), ids=SESSION_LIKE.keys())
def test_a_clerk_session_style_jwt_is_refused_as_an_m2m_token(client, claims_json, cat):
    resp = receive(client, signed(claims_json, cat=cat))
    assert resp.status_code == 401, resp.text
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert "from" not in resp.get_json()  # nobody was signed in
