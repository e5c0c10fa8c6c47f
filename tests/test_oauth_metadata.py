"""The mock issuer's OAuth 2.0 metadata (RFC 8414) and OpenID discovery document through
Flask's test client: the fields, the endpoints they name, and the issuer the JWTs carry."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import jwt
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from flask.testing import FlaskClient

from mock_issuer import db
from tests.issuer_calls import access_token, assert_oauth_error
from tests.seed import ISSUER_URL, SK, make_issuer_app

RFC_8414 = "/.well-known/oauth-authorization-server"
OPENID = "/.well-known/openid-configuration"
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
# Every field we publish that Authlib has a validator for. Not response_types_supported: RFC
# 8414 requires the member, and with no authorization endpoint our list is empty, which
# Authlib's validator reads as missing.
VALIDATED = (
    "issuer",
    "token_endpoint",
    "jwks_uri",
    "grant_types_supported",
    "token_endpoint_auth_methods_supported",
    "introspection_endpoint",
    "introspection_endpoint_auth_methods_supported",
    "revocation_endpoint",
    "revocation_endpoint_auth_methods_supported",
)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[FlaskClient]:
    yield make_issuer_app(tmp_path_factory.mktemp("issuer-oauth-metadata")).test_client()
    db.close_thread_connections()


def test_both_discovery_documents_are_the_same_public_json(client):
    rfc, openid = client.get(RFC_8414), client.get(OPENID)
    for resp in (rfc, openid):
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert rfc.json == openid.json


def test_metadata_names_the_endpoints_grants_and_auth_methods(client):
    meta = client.get(RFC_8414).json
    assert meta["issuer"] == ISSUER_URL
    assert meta["token_endpoint"] == ISSUER_URL + "/oauth/token"
    assert meta["introspection_endpoint"] == ISSUER_URL + "/oauth/introspect"
    assert meta["revocation_endpoint"] == ISSUER_URL + "/oauth/revoke"
    assert meta["jwks_uri"] == ISSUER_URL + "/.well-known/jwks.json"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert meta["response_types_supported"] == []
    for name in ("token", "introspection", "revocation"):
        assert meta[f"{name}_endpoint_auth_methods_supported"] == AUTH_METHODS


def test_the_fields_pass_authlibs_rfc_8414_validators(client):
    meta = AuthorizationServerMetadata(client.get(RFC_8414).json)
    for name in VALIDATED:
        getattr(meta, f"validate_{name}")()


def test_every_endpoint_named_is_served_here(client):
    meta = client.get(RFC_8414).json
    for name in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        resp = client.post(urlsplit(meta[name]).path)  # no credentials: the endpoint says so
        assert_oauth_error(resp, 401, "invalid_client")
    keys = client.get(urlsplit(meta["jwks_uri"]).path).json["keys"]
    assert {k["alg"] for k in keys} == {"RS256"}


def test_issuer_equals_the_iss_of_every_jwt_access_token(client):
    token = access_token(client)
    assert (
        jwt.decode(token, options={"verify_signature": False})["iss"]
        == (client.get(OPENID).json["issuer"])
    )


def test_issuer_comes_from_config_not_the_host_header(client):
    meta = client.get(RFC_8414, headers={"Host": "evil.example"}).json
    assert meta["issuer"] == ISSUER_URL
    assert all(
        meta[name].startswith(ISSUER_URL + "/")
        for name in ("token_endpoint", "jwks_uri", "introspection_endpoint", "revocation_endpoint")
    )


def test_fault_rules_match_the_discovery_documents(client):
    rule = {"route": "GET /.well-known/openid-configuration", "status": 500, "count": 1}
    assert client.put("/v1/_faults", json={"rules": [rule]}, headers=SK).status_code == 200
    try:
        assert_oauth_error(client.get(OPENID), 500, "server_error")
        assert client.get(OPENID).status_code == 200
    finally:
        client.delete("/v1/_faults", headers=SK)
