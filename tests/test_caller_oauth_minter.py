"""Unit tests of caller_app/oauth_minter.py inside the token client, against a fake OAuth 2.0
authorization server served in a thread: discovery, client authentication, the token request,
reuse, single flight, retries and the errors `/send` turns into 502/503 answers."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask, jsonify, request

from caller_app import create_app
from caller_app.config import ConfigError, load_settings
from caller_app.oauth_minter import OAuthClientCredentialsMinter, metadata_urls
from caller_app.token_client import (
    IssuerRequestRejected,
    IssuerUnavailable,
    M2MTokenClient,
    MachineSecretKeyRejected,
    RetryPolicy,
)
from tests.fakes import FakeClock
from tests.threaded_server import serve_in_thread, stop

CLIENT_ID = "svc-caller"
CLIENT_SECRET = "s3cret-value-for-the-caller"
RESOURCE = "https://receiver.example/api"


class FakeAuthorizationServer:
    """Metadata (OpenID or RFC 8414 path), a token endpoint minting opaque tokens, and a
    `/receive` that accepts what it minted. Script token answers with `script`."""

    def __init__(self, issuer_path: str = "", auth_methods: list[str] | None = None) -> None:
        self.issuer_path = issuer_path
        self.auth_methods = auth_methods
        self.openid_discovery = True
        self.issuer_override: str | None = None
        self.token_requests: list[tuple[dict, str]] = []  # (form, Authorization header)
        self.discovery_requests: list[str] = []
        self.script: deque[tuple[int, dict, dict]] = deque()  # (status, headers, body)
        self.expires_in: object = 300
        self.delay = 0.0
        self.minted: set[str] = set()
        self.lock = threading.Lock()
        self._server = serve_in_thread(self._app())
        self.origin = f"http://127.0.0.1:{self._server.server_port}"
        self.issuer = self.origin + issuer_path

    def stop(self) -> None:
        stop(self._server)

    def _metadata(self):
        self.discovery_requests.append(request.path)
        metadata = {
            "issuer": self.issuer_override or self.issuer,
            "token_endpoint": f"{self.issuer}/oauth/token",
        }
        if self.auth_methods is not None:
            metadata["token_endpoint_auth_methods_supported"] = self.auth_methods
        return jsonify(metadata)

    def _app(self) -> Flask:
        app = Flask("fake_authorization_server")

        @app.get(f"{self.issuer_path}/.well-known/openid-configuration")
        def openid():
            if not self.openid_discovery:
                return jsonify(error="not_found"), 404
            return self._metadata()

        @app.get(f"/.well-known/oauth-authorization-server{self.issuer_path}")
        def rfc8414():
            return self._metadata()

        @app.post(f"{self.issuer_path}/oauth/token")
        def token():
            with self.lock:
                self.token_requests.append(
                    (request.form.to_dict(), request.headers.get("Authorization", ""))
                )
                scripted = self.script.popleft() if self.script else None
            time.sleep(self.delay)
            if scripted is not None:
                status, headers, body = scripted
                return jsonify(body), status, headers
            secret = secrets.token_urlsafe(32)
            with self.lock:
                self.minted.add(secret)
            return jsonify(access_token=secret, token_type="Bearer", expires_in=self.expires_in)

        @app.post("/receive")
        def receive():
            secret = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if secret not in self.minted:
                return jsonify(error="invalid_token"), 401
            return jsonify(messageReceived=request.get_json()["message"])

        return app


@pytest.fixture
def server():
    running = FakeAuthorizationServer()
    yield running
    running.stop()


def make_client(server: FakeAuthorizationServer, **kwargs) -> M2MTokenClient:
    """A token client minting by client credentials at `server`; sleeps recorded, not slept."""
    minter_args = {"issuer_url": server.issuer, "resource": RESOURCE, "timeout": 2.0}
    minter_args.update(kwargs.pop("minter_args", {}))
    sleeps: list[float] = []
    client = M2MTokenClient(
        minter=OAuthClientCredentialsMinter(CLIENT_ID, CLIENT_SECRET, **minter_args),
        sleep=sleeps.append,
        timeout=2.0,
        **kwargs,
    )
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


def basic_credentials(header: str) -> tuple[str, str]:
    """The (id, secret) of a Basic header."""
    user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
    return user, password


# -- discovery and the token request ------------------------------------------------------------


def test_discovers_the_token_endpoint_and_authenticates_with_client_secret_basic(server):
    token = make_client(server, minter_args={"scope": "messages:write"}).get_token()
    ((form, authorization),) = server.token_requests
    assert form == {
        "grant_type": "client_credentials",
        "resource": RESOURCE,
        "scope": "messages:write",
    }
    assert basic_credentials(authorization) == (CLIENT_ID, CLIENT_SECRET)
    assert token.token in server.minted and token.format == "opaque"
    assert token.id.startswith("sha256:") and token.token not in token.id
    assert server.discovery_requests == ["/.well-known/openid-configuration"]


def test_falls_back_to_rfc8414_metadata_for_an_issuer_with_a_path():
    server = FakeAuthorizationServer(issuer_path="/tenant-a")
    server.openid_discovery = False
    try:
        make_client(server, minter_args={"audience": "api://receiver"}).get_token()
        assert server.discovery_requests == ["/.well-known/oauth-authorization-server/tenant-a"]
        assert server.token_requests[0][0]["audience"] == "api://receiver"
    finally:
        server.stop()


def test_metadata_urls_follow_openid_discovery_then_rfc8414():
    assert metadata_urls("https://id.example/realms/x") == [
        "https://id.example/realms/x/.well-known/openid-configuration",
        "https://id.example/.well-known/oauth-authorization-server/realms/x",
    ]


def test_uses_client_secret_post_when_the_server_lists_only_that():
    server = FakeAuthorizationServer(auth_methods=["client_secret_post", "private_key_jwt"])
    try:
        make_client(server).get_token()
        ((form, authorization),) = server.token_requests
        assert authorization == ""
        assert (form["client_id"], form["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)
    finally:
        server.stop()


def test_a_configured_token_url_skips_discovery(server):
    client = make_client(
        server, minter_args={"issuer_url": None, "token_url": f"{server.issuer}/oauth/token"}
    )
    client.get_token()
    assert server.discovery_requests == [] and len(server.token_requests) == 1


def test_metadata_naming_another_issuer_is_refused(server):
    server.issuer_override = "https://evil.example"
    with pytest.raises(IssuerRequestRejected, match="another issuer"):
        make_client(server).get_token()
    assert server.token_requests == []


# -- reuse and single flight --------------------------------------------------------------------


def test_one_token_is_reused_whatever_format_is_asked_until_shortly_before_expiry(server):
    clock = FakeClock()
    client = make_client(server, refresh_margin_seconds=30, monotonic=clock)
    first = client.get_token()
    assert all(client.get_token(fmt).id == first.id for fmt in ("opaque", "jwt") * 20)
    clock.advance(300 - 30 - 1)
    assert client.get_token().id == first.id
    clock.advance(2)  # inside the refresh margin
    assert client.get_token().id != first.id
    assert len(server.token_requests) == 2 and len(server.discovery_requests) == 1


def test_a_token_without_expires_in_is_used_once(server):
    server.expires_in = None
    client = make_client(server)
    assert client.get_token().id != client.get_token().id


def test_concurrent_callers_cause_one_token_request(server):
    server.delay = 0.2
    client = make_client(server)
    with ThreadPoolExecutor(10) as pool:
        ids = set(pool.map(lambda _: client.get_token().id, range(10)))
    assert len(ids) == 1 and len(server.token_requests) == 1


# -- failures -----------------------------------------------------------------------------------


def test_503_and_429_are_retried_with_backoff_honouring_retry_after(server):
    server.script.extend([(503, {}, {"error": "down"}), (429, {"Retry-After": "2"}, {})])
    client = make_client(server, retry=RetryPolicy(max_attempts=3))
    assert client.get_token().token in server.minted
    assert len(server.token_requests) == 3
    assert len(client.sleeps) == 2 and client.sleeps[1] >= 2


def test_a_server_still_failing_after_the_last_attempt_is_issuer_unavailable(server):
    server.script.extend([(503, {"Retry-After": "7"}, {})] * 2)
    client = make_client(server, retry=RetryPolicy(max_attempts=2, retry_after_cap=0.1))
    with pytest.raises(IssuerUnavailable, match="503") as caught:
        client.get_token()
    assert caught.value.retry_after == 7


def test_invalid_client_is_a_credentials_rejection_without_retry(server):
    body = {"error": "invalid_client", "error_description": "client authentication failed"}
    server.script.append((401, {"WWW-Authenticate": 'Basic realm="x"'}, body))
    client = make_client(server)
    with pytest.raises(MachineSecretKeyRejected, match="OAUTH_CLIENT_SECRET") as caught:
        client.get_token()
    assert CLIENT_SECRET not in str(caught.value)
    assert len(server.token_requests) == 1 and client.sleeps == []


def test_other_rfc6749_errors_are_rejections_naming_the_error(server):
    server.script.append((400, {}, {"error": "invalid_target", "error_description": "unknown"}))
    with pytest.raises(IssuerRequestRejected, match="invalid_target: unknown") as caught:
        make_client(server).get_token()
    assert (caught.value.status, caught.value.code) == (400, "invalid_target")


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        ({"token_type": "Bearer", "expires_in": 60}, "access_token"),
        ({"access_token": "a b", "token_type": "Bearer"}, "access_token"),
        ({"access_token": "abc", "token_type": "DPoP", "expires_in": 60}, "token_type"),
        ({"access_token": "abc", "token_type": "Bearer", "expires_in": "60"}, "expires_in"),
    ],
)
def test_a_malformed_token_response_is_issuer_unavailable(server, body, bad):
    server.script.append((200, {}, body))
    with pytest.raises(IssuerUnavailable, match=bad):
        make_client(server).get_token()


def test_an_unreachable_issuer_is_retried_then_unavailable(server):
    server.stop()
    client = make_client(server, retry=RetryPolicy(max_attempts=2))
    with pytest.raises(IssuerUnavailable, match="ConnectionError"):
        client.get_token()
    assert len(client.sleeps) == 1


# -- the app ------------------------------------------------------------------------------------


def oauth_env(server: FakeAuthorizationServer, **extra: str) -> dict[str, str]:
    return {
        "M2M_SKIP_DOTENV": "1",
        "M2M_PROVIDER": "oauth",
        "RECEIVER_URL": server.origin,
        "OAUTH_ISSUER_URL": server.issuer,
        "OAUTH_CLIENT_ID": CLIENT_ID,
        "OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "OAUTH_RESOURCE": RESOURCE,
        **extra,
    }


def test_send_with_the_oauth_provider_reaches_the_receiver_with_one_reused_token(server):
    client = create_app(oauth_env(server)).test_client()
    answers = [client.get("/send") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json["receiver"] == {"messageReceived": "Hello from the caller"}
    assert len({a.json["token"]["id"] for a in answers}) == 1
    assert len(server.token_requests) == 1


def test_send_answers_502_when_the_client_credentials_are_rejected(server):
    server.script.append((401, {}, {"error": "invalid_client"}))
    answer = create_app(oauth_env(server)).test_client().get("/send")
    assert answer.status_code == 502 and answer.json["dependency"] == "issuer"
    assert CLIENT_SECRET not in answer.get_data(as_text=True)


def test_send_answers_503_with_retry_after_when_the_server_is_down(server):
    server.script.extend([(503, {"Retry-After": "9"}, {})] * 4)
    app = create_app(oauth_env(server, M2M_ISSUER_MAX_ATTEMPTS="1"))
    answer = app.test_client().get("/send")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "9"


# -- settings -----------------------------------------------------------------------------------

BASE = {"M2M_PROVIDER": "oauth", "RECEIVER_URL": "http://127.0.0.1:1"}
CREDENTIALS = {"OAUTH_CLIENT_ID": "c", "OAUTH_CLIENT_SECRET": "very-secret"}


def test_oauth_settings_need_no_clerk_key_and_keep_the_secret_out_of_repr():
    settings = load_settings({**BASE, **CREDENTIALS, "OAUTH_ISSUER_URL": "https://id.example/"})
    assert settings.oauth_issuer_url == "https://id.example"
    assert settings.clerk_machine_secret_key == ""
    assert "very-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({**BASE, **CREDENTIALS}, "OAUTH_ISSUER_URL"),
        (
            {
                **BASE,
                **CREDENTIALS,
                "OAUTH_ISSUER_URL": "https://a",
                "OAUTH_TOKEN_URL": "https://b",
            },
            "OAUTH_TOKEN_URL",
        ),
        ({**BASE, "OAUTH_TOKEN_URL": "https://a/token", "OAUTH_CLIENT_ID": "c"}, "SECRET"),
        ({**BASE, **CREDENTIALS, "OAUTH_ISSUER_URL": "ftp://a"}, "OAUTH_ISSUER_URL"),
        ({"M2M_PROVIDER": "saml", "RECEIVER_URL": "http://127.0.0.1:1"}, "M2M_PROVIDER"),
        ({"RECEIVER_URL": "http://127.0.0.1:1"}, "CLERK_MACHINE_SECRET_KEY"),
    ],
)
def test_bad_provider_settings_stop_the_app_naming_the_variable(env, named):
    with pytest.raises(ConfigError, match=named) as caught:
        load_settings(env)
    assert "very-secret" not in str(caught.value)
