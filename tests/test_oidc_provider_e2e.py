"""The caller and the receiver against an OAuth 2.0 server nobody here wrote: panva's certified
oidc-provider (npm, pinned) as a real process. The caller gets tokens by client credentials and
the receiver verifies them: JWT access tokens (resource indicators, RFC 9068) and opaque tokens
(RFC 7662 introspection); a foreign audience, an expired JWT and a revoked token are refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from tests.harness import RunningApp, start_app
from tests.oauth_clients import send_token
from tests.oidc_provider_server import Client, RunningProvider, require_or_skip, start_provider

require_or_skip()

pytestmark = pytest.mark.e2e

TIMEOUT = 10
RESOURCE = "http://receiver.test/api"  # the receiver's identifier (a resource indicator)
SCOPE = "messages:write"
CALLER_JWT = Client("caller-jwt", "caller-jwt-secret-0123456789")
CALLER_OPAQUE = Client("caller-opaque", "caller-opaque-secret-0123456789")
SHORT_LIVED = Client("caller-short", "caller-short-secret-0123456789")
RECEIVER = Client("receiver", "receiver-secret-0123456789")
SHORT_TTL = 1  # seconds
LEEWAY = 5  # the receiver's default leeway_seconds


@pytest.fixture(scope="module")
def provider(xprocess, tmp_path_factory) -> Iterator[RunningProvider]:
    running = start_provider(
        xprocess,
        tmp_path_factory.mktemp("oidc-provider"),
        [CALLER_JWT, CALLER_OPAQUE, SHORT_LIVED, RECEIVER],
        opaque_clients=(CALLER_OPAQUE.client_id,),
        token_ttl_seconds={SHORT_LIVED.client_id: SHORT_TTL},
        scope=SCOPE,
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def receiver(xprocess, provider) -> Iterator[RunningApp]:
    """The receiver with M2M_PROVIDER=oauth, no caches: every token is checked afresh."""
    env = {
        "M2M_PROVIDER": "oauth",
        "OAUTH_ISSUER_URL": provider.issuer,
        "OAUTH_AUDIENCE": RESOURCE,
        "OAUTH_CLIENT_ID": RECEIVER.client_id,
        "OAUTH_CLIENT_SECRET": RECEIVER.client_secret,
        "OAUTH_REQUIRED_SCOPE": SCOPE,
        "M2M_JWT_CACHE_SECONDS": "0",
        "M2M_VERIFY_CACHE_SECONDS": "0",
    }
    running = start_app(xprocess, "tests.quick_receiver", env, server="gunicorn", workers=1)
    yield running
    running.stop()


def caller_env(provider: RunningProvider, receiver: RunningApp, client: Client) -> dict:
    return {
        "M2M_PROVIDER": "oauth",
        "RECEIVER_URL": receiver.url,
        "OAUTH_ISSUER_URL": provider.issuer,
        "OAUTH_CLIENT_ID": client.client_id,
        "OAUTH_CLIENT_SECRET": client.client_secret,
        "OAUTH_RESOURCE": RESOURCE,
        "OAUTH_SCOPE": SCOPE,
    }


def token_for(provider: RunningProvider, client: Client, resource: str = RESOURCE) -> str:
    """An access token straight from the provider, by Authlib's client-credentials request."""
    with OAuth2Session(client.client_id, client.client_secret) as session:
        token = session.fetch_token(
            f"{provider.issuer}/token",
            grant_type="client_credentials",
            resource=resource,
            scope=SCOPE,
            timeout=TIMEOUT,
        )
    return token["access_token"]


def send(receiver: RunningApp, token: str) -> requests.Response:
    return send_token(receiver.url, token)


def description(response: requests.Response) -> str:
    return response.json()["error_description"]


@pytest.mark.parametrize(
    ("client", "token_format"), [(CALLER_JWT, "jwt"), (CALLER_OPAQUE, "opaque")]
)
def test_the_caller_gets_tokens_by_client_credentials_and_the_receiver_accepts_them(
    start, provider, receiver, client, token_format
):
    caller = start("caller_app", caller_env(provider, receiver, client))
    answers = [requests.get(f"{caller.url}/send", timeout=TIMEOUT) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3, answers[0].text
    body = answers[0].json()
    assert body["receiver"]["from"] == client.client_id
    assert body["receiver"]["token"]["format"] == token_format  # as the receiver verified it
    assert body["token"]["format"] == token_format
    assert body["receiver"]["token"]["scopes"] == [SCOPE]
    assert len({a.json()["token"]["id"] for a in answers}) == 1  # one token, reused


def test_a_jwt_access_token_for_another_resource_is_refused(provider, receiver):
    response = send(receiver, token_for(provider, CALLER_JWT, resource="http://other.test/api"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert description(response) == "token is not meant for this receiver"


def test_an_opaque_token_for_another_resource_is_refused(provider, receiver):
    response = send(receiver, token_for(provider, CALLER_OPAQUE, resource="http://other.test/api"))
    assert response.status_code == 401
    assert description(response) == "token is not meant for this receiver"


def test_an_expired_jwt_access_token_is_refused(provider, receiver):
    token = token_for(provider, SHORT_LIVED)
    assert send(receiver, token).status_code == 200
    time.sleep(SHORT_TTL + LEEWAY + 1)
    response = send(receiver, token)
    assert response.status_code == 401
    assert description(response) == "token has expired"


def test_a_revoked_opaque_token_is_refused_through_introspection(provider, receiver):
    token = token_for(provider, CALLER_OPAQUE)
    assert send(receiver, token).status_code == 200
    with OAuth2Session(CALLER_OPAQUE.client_id, CALLER_OPAQUE.client_secret) as session:
        revoked = session.revoke_token(
            f"{provider.issuer}/token/revocation", token=token, timeout=TIMEOUT
        )
    assert revoked.status_code == 200
    response = send(receiver, token)
    assert response.status_code == 401
    assert description(response) == "token is invalid, expired or revoked"


def test_a_token_the_provider_never_issued_is_refused(receiver):
    response = send(receiver, "never-issued-" + "x" * 30)
    assert response.status_code == 401
