"""JWT-format tokens, the JWKS and signing-key rotation (Flask test client)."""

from __future__ import annotations

import time

import jwt
import pytest
from flask.testing import FlaskClient

from mock_issuer import db, signing_keys
from tests.issuer_calls import assert_clerk_error, bearer, mint, verify
from tests.seed import CALLER, ISSUER_URL, OUTSIDER, RECEIVER, SK, TEST_SECRET_KEY, make_issuer_app


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> FlaskClient:
    """One issuer for the tests that only add tokens."""
    yield make_issuer_app(tmp_path_factory.mktemp("issuer-jwt")).test_client()
    db.close_thread_connections()


@pytest.fixture
def fresh_client(tmp_path) -> FlaskClient:
    """A fresh issuer: rotation tests must not see each other's keys."""
    yield make_issuer_app(tmp_path).test_client()
    db.close_thread_connections()


def decode(client: FlaskClient, token: str, audience: str = RECEIVER.id) -> dict:
    keys = {k["kid"]: k for k in client.get("/.well-known/jwks.json").json["keys"]}
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(
        token,
        jwt.PyJWK(keys[kid]).key,
        algorithms=["RS256"],
        audience=audience,
        issuer=ISSUER_URL,
        options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]},
    )


def test_jwt_has_clerks_header_and_our_claims(client):
    body = mint(client, token_format="jwt", seconds_until_expiration=120, claims={"team": "ops"})
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    assert header["cat"] == "cl_B7d4PD333AAA"
    assert header["kid"] in {k["kid"] for k in client.get("/v1/jwks", headers=SK).json["keys"]}
    claims = decode(client, body["token"])
    assert claims["iss"] == ISSUER_URL and claims["sub"] == CALLER.id
    assert claims["jti"] == body["id"]
    assert claims["aud"] == [RECEIVER.id] and claims["scopes"] == RECEIVER.id
    assert claims["team"] == "ops"
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] in (120, 121)
    assert body["expiration"] == claims["exp"] * 1000
    assert body["last_used_at"] is None and body["claims"] == {"team": "ops"}


def test_jwt_iss_comes_from_config_not_the_host_header(client):
    body = client.post(
        "/v1/m2m_tokens",
        json={"token_format": "jwt"},
        headers={**bearer(CALLER.secret_key), "Host": "evil.example"},
    ).json
    assert decode(client, body["token"])["iss"] == ISSUER_URL


def test_jwt_is_not_listed(client):
    token = mint(client, token_format="jwt")
    resp = client.get(f"/v1/m2m_tokens?subject={CALLER.id}&revoked=true&expired=true", headers=SK)
    assert token["id"] not in {t["id"] for t in resp.json["m2m_tokens"]}


@pytest.mark.parametrize("name", ["sub", "iss", "exp", "aud", "scopes", "jti", "nbf", "iat"])
def test_reserved_claims_are_rejected(client, name):
    resp = client.post(
        "/v1/m2m_tokens",
        json={"token_format": "jwt", "claims": {name: "x"}},
        headers=bearer(CALLER.secret_key),
    )
    assert_clerk_error(resp, 400, "machine_token_reserved_claim")


def test_jwt_claims_must_be_an_object(client):
    resp = client.post(
        "/v1/m2m_tokens",
        json={"token_format": "jwt", "claims": [1]},
        headers=bearer(CALLER.secret_key),
    )
    assert_clerk_error(resp, 422, "form_param_value_invalid")


def test_verify_route_checks_jwt_signature_expiry_and_scope(client):
    token = mint(client, token_format="jwt", claims={"a": 1})
    resp = verify(client, token["token"])
    assert resp.status_code == 200
    assert resp.json["id"] == token["id"] and resp.json["claims"] == {"a": 1}
    assert resp.json["scopes"] == [RECEIVER.id] and resp.json["last_used_at"] is None
    assert verify(client, token["token"], key=TEST_SECRET_KEY).status_code == 200
    assert_clerk_error(
        verify(client, token["token"], key=OUTSIDER.secret_key), 404, "resource_not_found"
    )
    head, payload, sig = token["token"].split(".")
    tampered = f"{head}.{payload}.{sig[:-4]}AAAA"
    assert_clerk_error(verify(client, tampered), 404, "resource_not_found")
    short = mint(client, token_format="jwt", seconds_until_expiration=1)
    time.sleep(max(0.0, short["expiration"] / 1000 - time.time()) + 0.05)
    assert_clerk_error(verify(client, short["token"]), 404, "resource_not_found")


def test_jwt_signed_by_a_foreign_key_is_rejected(client):
    from cryptography.hazmat.primitives.asymmetric import rsa

    genuine = mint(client, token_format="jwt")
    header = jwt.get_unverified_header(genuine["token"])
    claims = jwt.decode(genuine["token"], options={"verify_signature": False})
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, foreign, algorithm="RS256", headers=header)
    assert_clerk_error(verify(client, forged), 404, "resource_not_found")
    unsigned = jwt.encode(claims, None, algorithm="none", headers={**header, "alg": "none"})
    assert_clerk_error(verify(client, unsigned), 404, "resource_not_found")


def test_rotation_signs_with_the_new_key_and_keeps_the_old_until_its_tokens_expire(fresh_client):
    client = fresh_client
    old_token = mint(client, token_format="jwt", seconds_until_expiration=1)
    old_kid = jwt.get_unverified_header(old_token["token"])["kid"]
    published_before = [k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"]]
    assert published_before[0] == old_kid and len(published_before) == 2
    resp = client.post("/v1/jwks/rotate", headers=SK)
    assert resp.status_code == 200
    new_kid = resp.json["active_kid"]
    assert resp.json["retired_kid"] == old_kid and new_kid != old_kid
    # Publish before signing: the key a rotation activates was already in the JWKS.
    assert new_kid == published_before[1]
    published_after = [k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"]]
    assert published_after[:2] == [new_kid, old_kid] and len(published_after) == 3
    upcoming = published_after[2]

    new_token = mint(client, token_format="jwt")
    assert jwt.get_unverified_header(new_token["token"])["kid"] == new_kid
    assert verify(client, old_token["token"]).status_code == 200
    decode(client, old_token["token"])

    time.sleep(max(0.0, old_token["expiration"] / 1000 - time.time()) + 0.05)
    assert [k["kid"] for k in client.get("/v1/jwks", headers=SK).json["keys"]] == [
        new_kid,
        upcoming,
    ]


def test_rotation_without_jwts_outstanding_drops_the_old_key_at_once(fresh_client):
    client = fresh_client
    before = client.get("/v1/jwks", headers=SK).json["keys"]
    resp = client.post("/v1/jwks/rotate", headers=SK)
    kids = [k["kid"] for k in resp.json["keys"]]
    assert kids[0] == resp.json["active_kid"] == before[1]["kid"]
    assert len(kids) == 2 and before[0]["kid"] not in kids
    assert resp.json["retired_kid"] == before[0]["kid"]


def test_rotate_route_needs_the_instance_key(client):
    assert_clerk_error(
        client.post("/v1/jwks/rotate", headers=bearer(CALLER.secret_key)), 401, "clerk_key_invalid"
    )


def test_jwks_objects_carry_what_verifiers_need(client):
    keys = client.get("/v1/jwks", headers=SK).json["keys"]
    assert len(keys) == 2  # the active key, then the next one published ahead of use
    for key in keys:
        assert set(key) == {"use", "kty", "kid", "alg", "n", "e"}
        assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"


def test_cli_rotate_signing_key_command(tmp_path):
    app = make_issuer_app(tmp_path)
    conn = db.connect(app.extensions["settings"].mock_issuer_db)
    before = signing_keys.active_signing_key(conn).kid
    result = app.test_cli_runner().invoke(args=["rotate-signing-key"])
    assert result.exit_code == 0, result.output
    after = signing_keys.active_signing_key(conn).kid
    assert after != before and after in result.output and before in result.output
    db.close_thread_connections()
