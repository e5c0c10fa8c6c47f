"""The caller and the receiver in OAuth mode (`M2M_PROVIDER=oauth`) against the mock issuer as
an OAuth 2.0 authorization server, all real processes. Authlib, the widely used Python OAuth
client, finds the token endpoint through the mock's RFC 8414 metadata and obtains JWT and opaque
access tokens that the receiver accepts; the caller does the same through `/send` (opaque
ones when its machine is configured so, verified by introspection); tokens for
another audience, revoked or expired are refused, and a refused token request is a clear 502."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.faults_client import IssuerFaults
from tests.harness import RunningApp, free_port, start_app
from tests.log_scan import assert_no_log_holds_a_secret, misplaced_secrets
from tests.oauth_clients import TIMEOUT, discovered_client, send_token, session
from tests.quick_receiver import JWKS_COOLDOWN
from tests.seed import CALLER, OUTSIDER, RECEIVER, SK, TEST_SECRET_KEY, SeedMachine, issuer_env

pytestmark = pytest.mark.e2e

SHORT_TTL = 1  # seconds: the short-lived machine's default_token_ttl
TOKEN_ROUTE = "POST /oauth/token"
INTROSPECTION_ROUTE = "POST /oauth/introspect"
LEEWAY = 5  # seconds: OAuthVerifier's default leeway_seconds, which the receiver keeps
USED: list[str] = []  # every access token this module obtained, for the log scan at the end


@dataclass(frozen=True)
class Stage:
    """The mock issuer, a receiver in OAuth mode for the RECEIVER machine, and two machines
    added over the Backend API: one scoped to OUTSIDER only, one whose tokens live SHORT_TTL."""

    issuer: RunningApp
    receiver: RunningApp
    neighbour: SeedMachine  # may call OUTSIDER, not RECEIVER
    short_lived: SeedMachine  # may call RECEIVER; its tokens live SHORT_TTL seconds


def receiver_env(issuer_url: str) -> dict[str, str]:
    """The receiver as the RECEIVER machine of the mock issuer, in OAuth mode; no caches, so
    every token is checked afresh (a revocation shows at once)."""
    return {
        "M2M_PROVIDER": "oauth",
        "OAUTH_ISSUER_URL": issuer_url,
        "OAUTH_AUDIENCE": RECEIVER.id,
        "OAUTH_CLIENT_ID": RECEIVER.id,  # the receiver's own credentials, for introspection
        "OAUTH_CLIENT_SECRET": RECEIVER.secret_key,
        "OAUTH_REQUIRED_SCOPE": RECEIVER.id,  # the mock's scopes are the target machine ids
        "M2M_JWT_CACHE_SECONDS": "0",
        "M2M_VERIFY_CACHE_SECONDS": "0",
    }


def caller_env(stage: Stage, machine: SeedMachine = CALLER, **target: str) -> dict[str, str]:
    """The caller as `machine` in OAuth mode; `target` names the receiver (OAUTH_AUDIENCE,
    OAUTH_RESOURCE or OAUTH_SCOPE), by default with the audience."""
    return {
        "M2M_PROVIDER": "oauth",
        "RECEIVER_URL": stage.receiver.url,
        "OAUTH_ISSUER_URL": stage.issuer.url,
        "OAUTH_CLIENT_ID": machine.id,
        "OAUTH_CLIENT_SECRET": machine.secret_key,
        **(target or {"OAUTH_AUDIENCE": RECEIVER.id}),
    }


def add_machine(issuer: RunningApp, name: str, scoped_to: SeedMachine, ttl: int) -> SeedMachine:
    """A new machine created through the Backend API with the instance secret key."""
    body = {"name": name, "scoped_machines": [scoped_to.id], "default_token_ttl": ttl}
    response = requests.post(f"{issuer.url}/v1/machines", json=body, headers=SK, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    created = response.json()
    return SeedMachine(created["id"], name, created["secret_key"])


@pytest.fixture(scope="module")
def stage(xprocess, tmp_path_factory) -> Iterator[Stage]:
    """One issuer and one receiver for the module (each test only adds tokens and machines)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = issuer_env(tmp_path_factory.mktemp("oauth-issuer"), MOCK_ISSUER_URL=url)
    issuer = start_app(xprocess, "mock_issuer", env, port=port)
    receiver = start_app(xprocess, "tests.quick_receiver", receiver_env(url), workers=1)
    neighbour = add_machine(issuer, "neighbour", scoped_to=OUTSIDER, ttl=3600)
    short_lived = add_machine(issuer, "short-lived", scoped_to=RECEIVER, ttl=SHORT_TTL)
    yield Stage(issuer, receiver, neighbour, short_lived)
    receiver.stop()
    issuer.stop()


@pytest.fixture
def faults(stage) -> Iterator[IssuerFaults]:
    """The shared issuer's fault rules, cleared when the test ends."""
    rules = IssuerFaults(stage.issuer.url, TEST_SECRET_KEY)
    yield rules
    rules.clear()


def fetch_token(stage: Stage, machine: SeedMachine = CALLER, **params: str) -> dict:
    """A token response from the mock's token endpoint, found by Authlib's discovery."""
    client = discovered_client(stage.issuer.url, machine, "client_secret_basic")
    token = client.fetch_access_token(grant_type="client_credentials", **params)
    USED.append(token["access_token"])
    return token


def access_token(stage: Stage, machine: SeedMachine = CALLER, **params: str) -> str:
    return fetch_token(stage, machine, **params)["access_token"]


def send(stage: Stage, token: str) -> requests.Response:
    return send_token(stage.receiver.url, token)


def refusal(response: requests.Response) -> str:
    """The error_description of a 401 in RFC 6750 form."""
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    return response.json()["error_description"]


def revoke(stage: Stage, machine: SeedMachine, token: str) -> None:
    """RFC 7009 revocation by the token's owner, through Authlib, at the discovered endpoint."""
    client = discovered_client(stage.issuer.url, machine, "client_secret_basic")
    endpoint = client.load_server_metadata()["revocation_endpoint"]
    response = session(machine).revoke_token(endpoint, token=token)
    assert response.status_code == 200, response.text


def introspected(stage: Stage, token: str) -> dict:
    """What the mock's introspection tells the receiver machine about `token`."""
    url = f"{stage.issuer.url}/oauth/introspect"
    return session(RECEIVER).introspect_token(url, token=token).json()


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_authlib_tokens_from_the_mock_issuer_are_accepted_by_the_oauth_receiver(
    stage, token_format
):
    token = fetch_token(stage, audience=RECEIVER.id, token_format=token_format)
    assert (token["access_token"].count(".") == 2) == (token_format == "jwt")
    response = send(stage, token["access_token"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["from"] == CALLER.id
    assert body["token"]["format"] == token_format  # as the receiver verified it
    assert body["token"]["scopes"] == [RECEIVER.id]
    assert body["token"]["expiration"] // 1000 == pytest.approx(token["expires_at"], abs=2)


def test_jwts_signed_before_and_after_a_key_rotation_are_both_accepted(stage):
    """The receiver finds the new `kid` at the discovered `jwks_uri`; the retired key stays
    published while tokens it signed live."""
    before = access_token(stage, token_format="jwt")
    assert send(stage, before).status_code == 200
    url = f"{stage.issuer.url}/v1/jwks/rotate"
    assert requests.post(url, headers=SK, timeout=TIMEOUT).status_code == 200
    time.sleep(JWKS_COOLDOWN)  # the receiver fetches the key set at most once per cooldown
    after = access_token(stage, token_format="jwt")
    assert [send(stage, t).status_code for t in (after, before)] == [200, 200]


@pytest.mark.parametrize(
    "target",
    [{name: RECEIVER.id} for name in ("OAUTH_AUDIENCE", "OAUTH_RESOURCE", "OAUTH_SCOPE")],
    ids=["audience", "resource", "scope"],
)
def test_the_oauth_caller_sends_through_the_receiver_with_one_reused_jwt(start, stage, target):
    caller = start("caller_app", caller_env(stage, **target))
    answers = [requests.get(f"{caller.url}/send", timeout=TIMEOUT) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3, answers[0].text
    body = answers[0].json()
    assert body["receiver"]["from"] == CALLER.id
    assert body["receiver"]["token"]["format"] == body["token"]["format"] == "jwt"
    assert body["receiver"]["token"]["scopes"] == [RECEIVER.id]
    assert len({a.json()["token"]["id"] for a in answers}) == 1  # one token, reused


def test_the_oauth_caller_cannot_ask_the_mock_issuer_for_an_opaque_token(start, stage):
    """In OAuth mode the server decides the format: `/send?format=opaque` still sends the
    format of the caller's machine, a JWT unless configured (the caller sends no
    `token_format`, a parameter of ours)."""
    caller = start("caller_app", caller_env(stage))
    answer = requests.get(f"{caller.url}/send", params={"format": "opaque"}, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    assert answer.json()["receiver"]["token"]["format"] == "jwt"


def test_an_oauth_caller_whose_machine_is_configured_opaque_sends_introspected_tokens(
    start, stage, faults
):
    """The machine's default format set through our admin route: a standard OAuth client gets
    opaque tokens, which the receiver verifies by introspection (it caches nothing here)."""
    machine = add_machine(stage.issuer, "opaque-by-default", scoped_to=RECEIVER, ttl=3600)
    url = f"{stage.issuer.url}/v1/_oauth_clients/{machine.id}"
    configured = requests.put(url, json={"token_format": "opaque"}, headers=SK, timeout=TIMEOUT)
    assert configured.status_code == 200, configured.text
    caller = start("caller_app", caller_env(stage, machine))
    faults.set(INTROSPECTION_ROUTE)  # counts introspections
    answers = [requests.get(f"{caller.url}/send", timeout=TIMEOUT) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    body = answers[0].json()
    assert body["token"]["format"] == body["receiver"]["token"]["format"] == "opaque"
    assert body["receiver"]["from"] == machine.id
    assert body["receiver"]["token"]["scopes"] == [RECEIVER.id]
    assert len({a.json()["token"]["id"] for a in answers}) == 1  # one token, reused
    assert faults.rule()["matched"] == 2  # each receipt introspected


@pytest.mark.parametrize(
    ("machine", "target", "status", "error", "issuer_code"),
    [
        (CALLER, {"OAUTH_AUDIENCE": OUTSIDER.id}, 502, "issuer_rejected_request", "invalid_target"),
        (CALLER, {"OAUTH_SCOPE": OUTSIDER.id}, 502, "issuer_rejected_request", "invalid_scope"),
        (OUTSIDER, {}, 502, "issuer_rejected_request", "unauthorized_client"),
        (
            SeedMachine(CALLER.id, CALLER.name, "ak_" + "0" * 32),
            {},
            502,
            "machine_secret_key_rejected",
            None,
        ),
    ],
    ids=["audience-not-scoped", "scope-not-scoped", "client-scoped-to-nobody", "wrong-secret"],
)
def test_the_oauth_caller_answers_a_clear_502_when_the_mock_issuer_refuses_the_token(
    start, stage, faults, machine, target, status, error, issuer_code
):
    caller = start("caller_app", caller_env(stage, machine, **target))
    faults.set(TOKEN_ROUTE)  # counts token requests
    answer = requests.get(f"{caller.url}/send", timeout=TIMEOUT)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error and body["dependency"] == "issuer"
    assert body.get("issuer_code") == issuer_code
    assert machine.secret_key not in answer.text
    assert faults.rule()["matched"] == 1  # a refusal is final: never retried


def test_the_oauth_caller_answers_503_with_retry_after_while_the_token_endpoint_is_down(
    start, stage, faults
):
    caller = start("caller_app", {**caller_env(stage), "M2M_ISSUER_MAX_ATTEMPTS": "2"})
    faults.set(TOKEN_ROUTE, status=503, retry_after=1)
    answer = requests.get(f"{caller.url}/send", timeout=TIMEOUT)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "issuer_unavailable"
    assert answer.headers["Retry-After"] == "1"
    assert faults.rule()["matched"] == 2  # retried, within M2M_ISSUER_MAX_ATTEMPTS
    faults.clear()
    assert requests.get(f"{caller.url}/send", timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_a_token_for_another_audience_is_refused(stage, token_format):
    token = access_token(stage, stage.neighbour, audience=OUTSIDER.id, token_format=token_format)
    expected = {
        "jwt": "token is not meant for this receiver",  # aud checked locally
        "opaque": "token is invalid, expired or revoked",  # the mock answers active: false
    }
    assert refusal(send(stage, token)) == expected[token_format]


def test_a_revoked_opaque_token_is_refused_through_introspection(stage):
    token = access_token(stage, token_format="opaque")
    assert send(stage, token).status_code == 200
    revoke(stage, CALLER, token)
    assert refusal(send(stage, token)) == "token is invalid, expired or revoked"


def test_a_revoked_jwt_is_still_accepted_by_a_receiver_verifying_it_locally(stage):
    """RFC 7009 revocation puts the JWT's `jti` on the mock's deny list, which only
    introspection reads: the receiver verifies JWTs with the published keys and never asks,
    so it accepts a revoked JWT until it expires, like any JWT."""
    token = access_token(stage, token_format="jwt")
    revoke(stage, CALLER, token)
    assert introspected(stage, token) == {"active": False}  # the issuer knows
    response = send(stage, token)
    assert response.status_code == 200, response.text
    assert response.json()["from"] == CALLER.id


def test_an_expired_opaque_token_is_refused(stage):
    token = fetch_token(stage, stage.short_lived, token_format="opaque")
    assert token["expires_in"] == SHORT_TTL
    assert send(stage, token["access_token"]).status_code == 200
    time.sleep(max(0.0, token["expires_at"] + 1 - time.time()))
    assert refusal(send(stage, token["access_token"])) == "token is invalid, expired or revoked"


def test_an_expired_jwt_is_refused_once_past_the_leeway(stage):
    token = fetch_token(stage, stage.short_lived, token_format="jwt")
    assert send(stage, token["access_token"]).status_code == 200
    time.sleep(max(0.0, token["expires_at"] + LEEWAY + 1 - time.time()))
    assert refusal(send(stage, token["access_token"])) == "token has expired"


def test_the_receiver_answers_503_with_the_issuers_retry_after_while_introspection_is_down(
    stage, faults
):
    token = access_token(stage, token_format="opaque")
    faults.set(INTROSPECTION_ROUTE, status=503, retry_after=2)
    response = send(stage, token)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "2"  # the issuer's, passed on
    assert "WWW-Authenticate" not in response.headers  # not the token's fault
    faults.clear()
    assert send(stage, token).status_code == 200


def test_no_log_of_any_process_holds_a_client_secret_or_an_access_token(start, stage, faults):
    """`test_faults_apps.py`'s log scan in OAuth mode, last in the module: tokens and client
    secrets sent where servers log them (query strings, paths, Referer, a malformed request
    line, the token endpoint's query string), sends that succeed and fail at the caller, the
    receiver and the issuer; then no log holds a client secret, an access token of this module
    or anything shaped like one (which catches the callers' own tokens)."""
    wrong = SeedMachine(CALLER.id, CALLER.name, "ak_" + "1" * 32)
    caller = start("caller_app", caller_env(stage))
    refused = start("caller_app", {**caller_env(stage, wrong), "M2M_ISSUER_MAX_ATTEMPTS": "1"})
    jwt_token = access_token(stage, token_format="jwt")
    opaque = access_token(stage, token_format="opaque")
    apps = [stage.issuer, stage.receiver, caller, refused]
    for app in apps:
        misplaced_secrets(app, [jwt_token, opaque, CALLER.secret_key])
    token_url = f"{stage.issuer.url}/oauth/token"
    in_query = {"client_id": CALLER.id, "client_secret": CALLER.secret_key}
    form = {"grant_type": "client_credentials", "client_id": CALLER.id}
    for params, secret in ((in_query, None), ({}, wrong.secret_key)):
        data = {**form, "client_secret": secret} if secret else form
        answer = requests.post(token_url, params=params, data=data, timeout=TIMEOUT)
        assert answer.status_code in (400, 401), answer.text

    assert [send(stage, token).status_code for token in (jwt_token, opaque)] == [200, 200]
    assert requests.get(f"{caller.url}/send", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{refused.url}/send", timeout=TIMEOUT).status_code == 502
    tampered = jwt_token[:-6] + "AAAAAA"
    assert send(stage, tampered).status_code == 401
    revoke(stage, CALLER, opaque)
    assert refusal(send(stage, opaque)) == "token is invalid, expired or revoked"
    faults.set(INTROSPECTION_ROUTE, status=503, retry_after=1)
    assert send(stage, access_token(stage, token_format="opaque")).status_code == 503
    faults.set(TOKEN_ROUTE, status=503, retry_after=1)
    assert requests.get(f"{refused.url}/send", timeout=TIMEOUT).status_code == 503

    machines = (CALLER, RECEIVER, OUTSIDER, wrong, stage.neighbour, stage.short_lived)
    client_secrets = {machine.secret_key for machine in machines} | {TEST_SECRET_KEY}
    assert_no_log_holds_a_secret(apps, client_secrets | set(USED) | {tampered})
