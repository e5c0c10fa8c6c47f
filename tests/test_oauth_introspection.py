"""The mock issuer's OAuth 2.0 introspection (RFC 7662) and revocation (RFC 7009) endpoints
through Flask's test client: active answers, every way to be inactive, and every error."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mock_issuer import db, ids, tokens
from tests.fakes import advance_clock
from tests.issuer_calls import (
    access_token,
    assert_no_store,
    assert_oauth_error,
    basic_header,
    bearer,
    mint,
    post_credentials,
)
from tests.seed import CALLER, ISSUER_URL, OUTSIDER, RECEIVER, SK, SeedMachine, make_issuer_app

INTROSPECT = "/oauth/introspect"
REVOKE = "/oauth/revoke"
ACTIVE_FIELDS = {
    "active",
    "scope",
    "client_id",
    "token_type",
    "exp",
    "iat",
    "nbf",
    "sub",
    "aud",
    "iss",
    "jti",
}
FORMATS = ["jwt", "opaque"]


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[FlaskClient]:
    """One issuer for the tests that only add tokens."""
    yield make_issuer_app(tmp_path_factory.mktemp("issuer-oauth-introspection")).test_client()
    db.close_thread_connections()


def introspect(client: FlaskClient, token: str, asker: SeedMachine = RECEIVER) -> TestResponse:
    return client.post(INTROSPECT, data={"token": token, **post_credentials(asker)})


def introspection(client: FlaskClient, token: str, asker: SeedMachine = RECEIVER) -> dict:
    resp = introspect(client, token, asker)
    assert resp.status_code == 200, resp.json
    assert resp.headers["Content-Type"] == "application/json"
    assert_no_store(resp)
    return resp.json


def revoke(client: FlaskClient, token: str, owner: SeedMachine = CALLER, **extra) -> TestResponse:
    return client.post(
        REVOKE, data={"token": token, **extra}, headers=basic_header(owner.id, owner.secret_key)
    )


def assert_inactive(client: FlaskClient, token: str, asker: SeedMachine = RECEIVER) -> None:
    """RFC 7662 §2.2: nothing but `active: false`, whatever the reason."""
    assert introspection(client, token, asker) == {"active": False}


# ---- active tokens ----


@pytest.mark.parametrize("token_format", FORMATS)
def test_a_live_token_for_the_asking_resource_is_active_with_the_standard_fields(
    client, token_format
):
    before = int(time.time())
    token = access_token(client, token_format=token_format)
    body = introspection(client, token)
    assert set(body) == ACTIVE_FIELDS
    assert body["active"] is True and body["token_type"] == "Bearer"
    assert body["client_id"] == body["sub"] == CALLER.id
    assert body["aud"] == [RECEIVER.id] and body["scope"] == RECEIVER.id
    assert body["iss"] == ISSUER_URL and ids.is_token_id(body["jti"])
    assert before <= body["iat"] == body["nbf"] <= before + 5
    assert body["exp"] - body["iat"] == 3600


def test_jwt_introspection_agrees_with_the_tokens_claims(client):
    token = access_token(client)
    claims = jwt.decode(token, options={"verify_signature": False})
    body = introspection(client, token)
    for name in ("iss", "sub", "client_id", "exp", "iat", "jti", "scope"):
        assert body[name] == claims[name]


def test_basic_authentication_works_for_introspection(client):
    token = access_token(client)
    resp = client.post(
        INTROSPECT, data={"token": token}, headers=basic_header(RECEIVER.id, RECEIVER.secret_key)
    )
    assert resp.status_code == 200 and resp.json["active"] is True


def test_an_m2m_opaque_token_introspects_too(client):
    """OAuth opaque tokens share the M2M token table, so Clerk-minted ones answer as well."""
    token = mint(client)["token"]
    body = introspection(client, token)
    assert body["active"] is True and body["scope"] == RECEIVER.id


def test_a_token_hint_does_not_change_the_answer(client):
    token = access_token(client)
    for hint in ("access_token", "refresh_token", "nonsense"):
        resp = client.post(
            INTROSPECT, data={"token": token, "token_type_hint": hint, **post_credentials(RECEIVER)}
        )
        assert resp.json["active"] is True


# ---- inactive tokens ----


@pytest.mark.parametrize(
    "token",
    [
        "mt_" + "0" * 64,
        "garbage",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        "x" * (tokens.MAX_TOKEN_LENGTH + 1),
    ],
    ids=["unknown-opaque", "garbage", "unsigned-jwt", "over-long"],
)
def test_unknown_tokens_are_inactive(client, token):
    assert_inactive(client, token)


@pytest.mark.parametrize("token_format", FORMATS)
def test_expired_tokens_are_inactive(client, monkeypatch, token_format):
    token = access_token(client, token_format=token_format)
    advance_clock(monkeypatch, 3601)
    assert_inactive(client, token)


@pytest.mark.parametrize("token_format", FORMATS)
def test_tokens_not_meant_for_the_asker_are_inactive(client, token_format):
    token = access_token(client, token_format=token_format)
    assert_inactive(client, token, OUTSIDER)
    assert_inactive(client, token, CALLER)  # its own client is not its audience
    assert introspection(client, token)["active"] is True


def test_a_jwt_signed_with_another_key_is_inactive(client):
    genuine = jwt.decode(access_token(client), options={"verify_signature": False})
    kid = jwt.get_unverified_header(access_token(client))["kid"]
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(genuine, forger, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})
    assert_inactive(client, forged)


def test_a_clerk_m2m_jwt_is_not_an_oauth_access_token(client):
    m2m_jwt = mint(client, token_format="jwt")["token"]
    assert_inactive(client, m2m_jwt)


def test_a_token_revoked_through_the_m2m_api_is_inactive(client):
    token = access_token(client, token_format="opaque")
    row_id = introspection(client, token)["jti"]
    assert client.post(f"/m2m_tokens/{row_id}/revoke", headers=SK).status_code == 200
    assert_inactive(client, token)


def test_introspections_are_counted_as_verifications(tmp_path):
    client = make_issuer_app(tmp_path).test_client()
    for token_format in FORMATS:
        token = access_token(client, token_format=token_format)
        introspection(client, token)
        assert_inactive(client, token, OUTSIDER)
    usage = client.get("/v1/usage", headers=SK).json["totals"]["verifications"]
    assert usage["jwt"] == {"ok": 1, "failed": 1} and usage["opaque"] == {"ok": 1, "failed": 1}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'mock_issuer_token_verifications_total{format="jwt",outcome="ok"} 1.0' in metrics


# ---- introspection errors ----


def test_introspection_needs_client_authentication(client):
    resp = client.post(INTROSPECT, data={"token": access_token(client)})
    assert_oauth_error(resp, 401, "invalid_client")


def test_introspection_with_a_wrong_secret_is_invalid_client(client):
    wrong = SeedMachine(RECEIVER.id, RECEIVER.name, CALLER.secret_key)
    assert_oauth_error(introspect(client, access_token(client), wrong), 401, "invalid_client")


def test_introspection_without_a_token_is_invalid_request(client):
    resp = client.post(INTROSPECT, data=post_credentials(RECEIVER))
    assert_oauth_error(resp, 400, "invalid_request")


def test_introspection_with_a_repeated_token_is_invalid_request(client):
    resp = client.post(INTROSPECT, data={"token": ["a", "b"], **post_credentials(RECEIVER)})
    assert_oauth_error(resp, 400, "invalid_request")


# ---- revocation ----


@pytest.mark.parametrize("token_format", FORMATS)
def test_a_client_revokes_its_own_token(client, token_format):
    token = access_token(client, token_format=token_format)
    resp = revoke(client, token)
    assert resp.status_code == 200 and resp.json == {}
    assert_no_store(resp)
    assert_inactive(client, token)
    assert revoke(client, token).status_code == 200  # again: nothing left to do, still 200


def test_a_revoked_opaque_token_fails_m2m_verification_too(client):
    token = access_token(client, token_format="opaque")
    assert revoke(client, token, token_type_hint="access_token").status_code == 200
    resp = client.post(
        "/m2m_tokens/verify", json={"token": token}, headers=bearer(RECEIVER.secret_key)
    )
    assert resp.status_code == 404


def test_revoking_one_jwt_leaves_the_others_active(client):
    kept, revoked = access_token(client), access_token(client)
    assert revoke(client, revoked).status_code == 200
    assert introspection(client, kept)["active"] is True
    assert_inactive(client, revoked)


@pytest.mark.parametrize("token", ["mt_" + "1" * 64, "garbage", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"])
def test_revoking_an_unknown_token_answers_200(client, token):
    assert revoke(client, token).status_code == 200


@pytest.mark.parametrize("token_format", FORMATS)
def test_revoking_an_expired_token_answers_200(client, monkeypatch, token_format):
    token = access_token(client, token_format=token_format)
    advance_clock(monkeypatch, 3601)
    assert revoke(client, token).status_code == 200


@pytest.mark.parametrize("token_format", FORMATS)
def test_another_clients_token_is_refused_and_stays_active(client, token_format):
    token = access_token(client, token_format=token_format)
    assert_oauth_error(revoke(client, token, RECEIVER), 400, "unauthorized_client")
    assert introspection(client, token)["active"] is True


def test_revocation_needs_client_authentication(client):
    resp = client.post(REVOKE, data={"token": access_token(client)})
    assert_oauth_error(resp, 401, "invalid_client")


def test_revocation_without_a_token_is_invalid_request(client):
    resp = client.post(REVOKE, headers=basic_header(CALLER.id, CALLER.secret_key))
    assert_oauth_error(resp, 400, "invalid_request")


def test_revocation_with_two_authentication_methods_is_invalid_request(client):
    resp = client.post(
        REVOKE,
        data={"token": "x", **post_credentials(CALLER)},
        headers=basic_header(CALLER.id, CALLER.secret_key),
    )
    assert_oauth_error(resp, 400, "invalid_request")


def test_expired_entries_leave_the_jwt_deny_list(client, monkeypatch):
    token = access_token(client)
    assert revoke(client, token).status_code == 200
    advance_clock(monkeypatch, 3601)
    assert revoke(client, access_token(client)).status_code == 200  # prunes on the way
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    with client.application.app_context():
        conn = db.connect(client.application.extensions["settings"].mock_issuer_db)
        row = conn.execute("SELECT 1 FROM oauth_revoked_jwts WHERE jti = ?", (jti,)).fetchone()
    assert row is None
