"""Authlib, the widely used Python OAuth client, against a real mock issuer process: discovery
of the RFC 8414 metadata, the client-credentials grant with both client authentication methods,
PyJWT verification of the JWT access token (RFC 9068) against the published JWKS, and Authlib's
own introspection and revocation calls."""

from __future__ import annotations

import jwt
import pytest
from authlib.integrations.base_client import OAuthError

from tests.oauth_clients import TIMEOUT, discovered_client, session
from tests.seed import CALLER, OUTSIDER, RECEIVER, SeedMachine

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def verify_rfc_9068(token: str, metadata: dict, audience: str) -> dict:
    """The resource server's checks (RFC 9068 §4): `typ`, signature by a key from `jwks_uri`
    with the algorithm pinned, issuer, audience, expiry and the required claims."""
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    key = jwt.PyJWKClient(metadata["jwks_uri"], timeout=TIMEOUT).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        issuer=metadata["issuer"],
        audience=audience,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
    )


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
def test_authlib_gets_a_jwt_access_token_that_verifies_against_the_jwks(issuer, auth_method):
    client = discovered_client(issuer.url, CALLER, auth_method)
    token = client.fetch_access_token(grant_type="client_credentials", audience=RECEIVER.id)
    metadata = client.load_server_metadata()
    assert metadata["issuer"] == issuer.url
    assert token["token_type"] == "Bearer" and token["scope"] == RECEIVER.id
    assert token["expires_at"] > token["expires_in"]  # Authlib worked out the expiry
    claims = verify_rfc_9068(token["access_token"], metadata, RECEIVER.id)
    assert claims["sub"] == claims["client_id"] == CALLER.id
    with pytest.raises(jwt.InvalidAudienceError):
        verify_rfc_9068(token["access_token"], metadata, OUTSIDER.id)
    info = session(RECEIVER, auth_method).introspect_token(
        metadata["introspection_endpoint"], token=token["access_token"]
    )
    assert info.status_code == 200
    assert info.json()["active"] is True and info.json()["client_id"] == CALLER.id


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
def test_authlib_opaque_token_introspects_then_revokes(issuer, auth_method):
    client = discovered_client(issuer.url, CALLER, auth_method)
    token = client.fetch_access_token(grant_type="client_credentials", token_format="opaque")
    metadata = client.load_server_metadata()
    assert token["access_token"].startswith("mt_")
    receiver = session(RECEIVER, auth_method)
    url = metadata["introspection_endpoint"]
    assert receiver.introspect_token(url, token=token["access_token"]).json()["active"] is True
    revoked = session(CALLER, auth_method).revoke_token(
        metadata["revocation_endpoint"], token=token["access_token"]
    )
    assert revoked.status_code == 200
    assert receiver.introspect_token(url, token=token["access_token"]).json() == {"active": False}


@pytest.mark.parametrize(
    ("machine", "params", "error"),
    [
        (SeedMachine(CALLER.id, CALLER.name, "ak_" + "0" * 32), {}, "invalid_client"),
        (CALLER, {"audience": OUTSIDER.id}, "invalid_target"),
        (CALLER, {"scope": OUTSIDER.id}, "invalid_scope"),
        (OUTSIDER, {}, "unauthorized_client"),
    ],
    ids=["wrong-secret", "not-scoped-target", "not-scoped-scope", "scoped-to-nobody"],
)
def test_authlib_reads_our_errors_as_rfc_6749_errors(issuer, machine, params, error):
    client = discovered_client(issuer.url, machine, "client_secret_basic")
    with pytest.raises(OAuthError) as raised:
        client.fetch_access_token(grant_type="client_credentials", **params)
    assert raised.value.error == error
