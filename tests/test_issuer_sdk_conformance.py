"""Conformance: Clerk's official Python SDK (`clerk-backend-api` 7.x) against a running mock issuer.

One issuer process serves the whole module (`server_url=<issuer>/v1`, as a developer would set
it). The SDK drives machines, scopes, secret keys, token create (opaque and JWT), list, revoke
and verify; JWTs are checked with PyJWT against the issuer's JWKS. Every client disables
retries, so a 5xx fails the test at once instead of backing off for up to an hour.

These tests prove the SDK can send our requests and read our answers (models, typed errors,
helpers); the issuer's behaviour itself is pinned, route by route, in test_issuer_api.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import requests
from clerk_backend_api import Clerk, models
from clerk_backend_api.security import (
    TokenVerificationError,
    TokenVerificationErrorReason,
    VerifyTokenOptions,
    verify_token,
)
from clerk_backend_api.utils import BackoffStrategy, RetryConfig

from tests.harness import RunningApp, free_port, start_app, wait_until
from tests.seed import CALLER, OUTSIDER, RECEIVER, TEST_SECRET_KEY, issuer_env

pytestmark = pytest.mark.e2e

# "none" means exactly one attempt; the SDK's default would retry 5xx for up to an hour.
NO_RETRIES = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), retry_connection_errors=False)
TIMEOUT_MS = 5_000
M2M_JWT_CATEGORY = "cl_B7d4PD333AAA"
MACHINE_ID = re.compile(r"^mch_\w{27}$")
TOKEN_ID = re.compile(r"^mt_[0-9a-f]{32}$")
UNKNOWN_MACHINE_KEY = "ak_" + "0" * 32
UNKNOWN_INSTANCE_KEY = "sk_test_" + "0" * 32


# --- fixtures -------------------------------------------------------------------------------


class WireLog:
    """Every HTTP response the SDK received, so a test can also check the raw wire."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def record(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)

    def last(self) -> httpx.Response:
        return self.responses[-1]


@pytest.fixture(scope="module")
def sdk_issuer(xprocess, tmp_path_factory) -> Iterator[RunningApp]:
    """A seeded issuer of our own for this module: its token counts are ours alone."""
    port = free_port()
    env = issuer_env(
        tmp_path_factory.mktemp("sdk-issuer"), MOCK_ISSUER_URL=f"http://127.0.0.1:{port}"
    )
    running = start_app(xprocess, "mock_issuer", env, port=port)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def wire() -> WireLog:
    return WireLog()


@pytest.fixture(scope="module")
def connect(sdk_issuer: RunningApp, wire: WireLog) -> Iterator[Callable[[str], Clerk]]:
    """`connect(key)` -> a Clerk SDK client authenticated with `key`, pointed at our issuer."""
    http_clients: list[httpx.Client] = []

    def _connect(key: str) -> Clerk:
        http = httpx.Client(follow_redirects=True, event_hooks={"response": [wire.record]})
        http_clients.append(http)
        return sdk_client(key, f"{sdk_issuer.url}/v1", http)

    yield _connect
    for http in http_clients:
        http.close()


@pytest.fixture(scope="module")
def admin(connect) -> Clerk:
    """The instance (sk) client: administers machines, may list/revoke/verify any token."""
    return connect(TEST_SECRET_KEY)


@pytest.fixture(scope="module")
def caller(connect) -> Clerk:
    return connect(CALLER.secret_key)


@pytest.fixture(scope="module")
def receiver(connect) -> Clerk:
    return connect(RECEIVER.secret_key)


@pytest.fixture(scope="module")
def outsider(connect) -> Clerk:
    return connect(OUTSIDER.secret_key)


@dataclass(frozen=True)
class ExpiredToken:
    sender: models.MachineCreated
    target: models.MachineCreated
    token: models.CreateM2MTokenResponseBody


@pytest.fixture(scope="module", autouse=True)
def short_lived_token(connect, admin) -> ExpiredToken:
    """A 1 s opaque token of a fresh sender -> target pair, minted before the first test so its
    lifetime runs out while the other tests run."""
    sender, target = new_pair(admin, "expired")
    token = connect(sender.secret_key).m2m.create_token(seconds_until_expiration=1)
    return ExpiredToken(sender, target, token)


@pytest.fixture
def expired_token(short_lived_token: ExpiredToken) -> ExpiredToken:
    """The short-lived token, once it has certainly expired."""
    time.sleep(max(0.0, short_lived_token.token.expiration / 1000 - time.time()) + 0.3)
    return short_lived_token


# --- helpers --------------------------------------------------------------------------------


def sdk_client(key: str, server_url: str, http: httpx.Client) -> Clerk:
    """The SDK as every test here builds it: one attempt per call, 5 s timeout."""
    return Clerk(
        bearer_auth=key,
        server_url=server_url,
        client=http,
        retry_config=NO_RETRIES,
        timeout_ms=TIMEOUT_MS,
    )


def unique_name(label: str) -> str:
    return f"sdk-{label}-{uuid.uuid4().hex[:10]}"


def new_machine(admin: Clerk, label: str, **fields: Any) -> models.MachineCreated:
    return admin.machines.create(request={"name": unique_name(label), **fields})


def new_pair(admin: Clerk, label: str) -> tuple[models.MachineCreated, models.MachineCreated]:
    """A fresh sender -> target pair, so a test owns every token the sender mints."""
    target = new_machine(admin, f"{label}-target")
    sender = new_machine(admin, f"{label}-sender", scoped_machines=[target.id])
    return sender, target


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_recent_ms(timestamp: float) -> None:
    """Clerk times are Unix milliseconds: close to now, not seconds and not microseconds."""
    assert abs(timestamp - now_ms()) < 120_000, timestamp


def error_body(exc: models.ClerkBaseError) -> dict[str, Any]:
    return json.loads(exc.body)


def assert_clerk_error(
    exc: models.ClerkBaseError, status: int, codes: str | tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The error is Clerk's envelope, as exactly `application/json`, with the expected code."""
    assert exc.status_code == status, exc.body
    assert exc.headers.get("content-type") == "application/json"
    body = error_body(exc)
    assert isinstance(body.get("clerk_trace_id"), str), body
    first = body["errors"][0]
    assert {"message", "long_message", "code"} <= first.keys(), first
    if codes is not None:
        expected = (codes,) if isinstance(codes, str) else codes
        assert first["code"] in expected, first
    return first


def token_ids(listing: models.GetM2MTokensResponseBody) -> list[str]:
    return [t.id for t in listing.m2m_tokens]


def jwks_keys(jwks: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    return {key.key_id: key for key in jwt.PyJWKSet.from_dict(jwks).keys}


# --- machines -------------------------------------------------------------------------------


def test_create_machine_returns_secret_key_scoped_machines_and_ttl(admin):
    target = new_machine(admin, "create-target")
    name = unique_name("create")
    created = admin.machines.create(
        request={"name": name, "scoped_machines": [target.id], "default_token_ttl": 120}
    )

    assert created.object == models.MachineCreatedObject.MACHINE
    assert MACHINE_ID.match(created.id)
    assert created.name == name
    assert created.instance_id.startswith("ins_")
    assert created.default_token_ttl == 120
    assert created.secret_key.startswith("ak_")
    assert [m.id for m in created.scoped_machines] == [target.id]
    assert created.scoped_machines[0].name == target.name
    assert created.scoped_machines[0].object == models.MachineWithoutScopedMachinesObject.MACHINE
    assert_recent_ms(created.created_at)
    assert created.updated_at >= created.created_at
    assert target.secret_key != created.secret_key


def test_list_machines_pages_newest_first_and_filters_by_query(admin):
    label = f"page{uuid.uuid4().hex[:8]}"
    made = []
    for i in range(3):
        made.append(admin.machines.create(request={"name": f"sdk-{label}-{i}"}))
        time.sleep(0.005)  # distinct created_at milliseconds, so "newest first" is well defined
    newest_first = [m.id for m in reversed(made)]

    everything = admin.machines.list(query=label)
    assert everything.total_count == 3
    assert [m.id for m in everything.data] == newest_first

    first = admin.machines.list(query=label, limit=2, offset=0)
    second = admin.machines.list(query=label, limit=2, offset=2)
    assert (first.total_count, second.total_count) == (3, 3)
    assert [m.id for m in first.data] + [m.id for m in second.data] == newest_first

    seeded = admin.machines.list(limit=100)
    assert {CALLER.id, RECEIVER.id, OUTSIDER.id} <= {m.id for m in seeded.data}
    assert admin.machines.list(query=f"no-such-{uuid.uuid4().hex}").total_count == 0


def test_get_machine_returns_its_scoped_machines(admin):
    machine = admin.machines.get(machine_id=CALLER.id)
    assert machine.object == models.MachineObject.MACHINE
    assert (machine.id, machine.name) == (CALLER.id, CALLER.name)
    assert [m.id for m in machine.scoped_machines] == [RECEIVER.id]
    assert machine.scoped_machines[0].name == RECEIVER.name
    assert machine.default_token_ttl == 3600


def test_update_machine_changes_name_and_default_token_ttl(admin, connect):
    machine = new_machine(admin, "update")
    new_name = unique_name("renamed")

    updated = admin.machines.update(machine_id=machine.id, name=new_name, default_token_ttl=77)
    assert (updated.id, updated.name, updated.default_token_ttl) == (machine.id, new_name, 77)
    assert updated.updated_at >= machine.updated_at

    fetched = admin.machines.get(machine_id=machine.id)
    assert (fetched.name, fetched.default_token_ttl) == (new_name, 77)

    # A token minted without an explicit lifetime takes the machine's new default.
    token = connect(machine.secret_key).m2m.create_token()
    assert abs(token.expiration - token.created_at - 77_000) <= 1_000


def test_delete_machine_removes_it_its_key_and_scopes_to_it(admin, connect, wire):
    sender, target = new_pair(admin, "delete")

    deleted = admin.machines.delete(machine_id=target.id)
    assert deleted.object == models.MachineDeletedObject.MACHINE
    assert deleted.id == target.id
    assert wire.last().json() == {"object": "machine", "id": target.id, "deleted": True}

    with pytest.raises(models.ClerkErrors) as caught:
        admin.machines.get(machine_id=target.id)
    assert_clerk_error(caught.value, 404, "machine_not_found")
    assert admin.machines.list(query=target.name).total_count == 0
    assert admin.machines.get(machine_id=sender.id).scoped_machines == []

    with pytest.raises(models.SDKError) as caught:
        connect(target.secret_key).m2m.create_token()
    assert_clerk_error(caught.value, 401, "machine_secret_key_invalid")


# --- scopes ---------------------------------------------------------------------------------


def test_create_scope_then_duplicate_is_409_then_delete_scope(admin):
    a = new_machine(admin, "scope-from")
    b = new_machine(admin, "scope-to")

    scope = admin.machines.create_scope(machine_id=a.id, to_machine_id=b.id)
    assert scope.object == models.MachineScopeObject.MACHINE_SCOPE
    assert (scope.from_machine_id, scope.to_machine_id) == (a.id, b.id)
    assert_recent_ms(scope.created_at)
    assert [m.id for m in admin.machines.get(machine_id=a.id).scoped_machines] == [b.id]
    assert admin.machines.get(machine_id=b.id).scoped_machines == []  # edges are directed

    with pytest.raises(models.ClerkErrors) as caught:
        admin.machines.create_scope(machine_id=a.id, to_machine_id=b.id)
    assert_clerk_error(caught.value, 409)
    assert caught.value.data.errors[0].code

    removed = admin.machines.delete_scope(machine_id=a.id, other_machine_id=b.id)
    assert removed.object == models.MachineScopeDeletedObject.MACHINE_SCOPE
    assert (removed.from_machine_id, removed.to_machine_id) == (a.id, b.id)
    assert admin.machines.get(machine_id=a.id).scoped_machines == []


# --- secret keys ----------------------------------------------------------------------------


def test_get_secret_key_returns_the_machine_key(admin):
    seeded = admin.machines.get_secret_key(machine_id=CALLER.id)
    assert seeded.object == models.MachineSecretKeyObject.MACHINE_SECRET_KEY
    assert seeded.secret == CALLER.secret_key

    machine = new_machine(admin, "secret")
    assert admin.machines.get_secret_key(machine_id=machine.id).secret == machine.secret_key


def test_rotate_secret_key_with_grace_keeps_old_key_until_the_window_ends(admin, connect):
    machine = new_machine(admin, "rotate-grace")
    old_key = machine.secret_key
    old_sdk = connect(old_key)

    rotated = admin.machines.rotate_secret_key(machine_id=machine.id, previous_token_ttl=2)
    assert rotated.object == models.MachineSecretKeyObject.MACHINE_SECRET_KEY
    assert rotated.secret.startswith("ak_")
    assert rotated.secret != old_key
    assert admin.machines.get_secret_key(machine_id=machine.id).secret == rotated.secret

    assert old_sdk.m2m.create_token(seconds_until_expiration=60).subject == machine.id
    assert connect(rotated.secret).m2m.create_token(seconds_until_expiration=60).subject == (
        machine.id
    )

    def old_key_rejected() -> bool:
        try:
            old_sdk.m2m.create_token(seconds_until_expiration=60)
        except models.SDKError as exc:
            assert_clerk_error(exc, 401, "machine_secret_key_invalid")
            return True
        return False

    assert wait_until(old_key_rejected, timeout=10, interval=0.25)
    assert connect(rotated.secret).m2m.create_token(seconds_until_expiration=60).subject == (
        machine.id
    )


# --- token creation -------------------------------------------------------------------------


def test_create_opaque_token_answers_201_with_the_token_object(caller, wire):
    before = now_ms()
    created = caller.m2m.create_token(seconds_until_expiration=60)

    assert wire.last().status_code == 201
    assert isinstance(created, models.CreateM2MTokenResponseBody)
    assert created.object == models.CreateM2MTokenObject.MACHINE_TO_MACHINE_TOKEN
    assert TOKEN_ID.match(created.id)
    assert created.token.startswith("mt_")
    assert created.subject == CALLER.id
    assert created.scopes == [RECEIVER.id]
    assert created.claims is None
    assert (created.revoked, created.revocation_reason, created.expired) == (False, None, False)
    assert created.last_used_at is None
    assert before - 1_000 <= created.created_at <= now_ms() + 1_000
    assert abs(created.expiration - created.created_at - 60_000) <= 1_000
    assert created.updated_at >= created.created_at


def test_create_jwt_token_verifies_with_pyjwt_against_both_jwks(caller, admin, sdk_issuer, wire):
    created = caller.m2m.create_token(
        token_format=models.TokenFormat.JWT,
        seconds_until_expiration=60,
        claims={"purpose": "sdk-conformance"},
    )
    assert wire.last().status_code == 201
    assert TOKEN_ID.match(created.id)
    assert created.subject == CALLER.id
    assert created.last_used_at is None
    assert created.token.count(".") == 2

    kid = jwt.get_unverified_header(created.token)["kid"]
    sdk_jwks = admin.jwks.get_jwks().model_dump(exclude_none=True)  # GET /v1/jwks with the sk
    well_known = requests.get(f"{sdk_issuer.url}/.well-known/jwks.json", timeout=5)
    assert well_known.status_code == 200
    for jwks in (sdk_jwks, well_known.json()):
        published = {key["kid"]: key for key in jwks["keys"]}
        assert kid in published
        assert (published[kid]["kty"], published[kid]["alg"]) == ("RSA", "RS256")
        assert published[kid]["use"] == "sig"
        assert not {"d", "p", "q"} & published[kid].keys()  # public halves only
        decoded = jwt.api_jwt.decode_complete(
            created.token,
            key=jwks_keys(jwks)[kid].key,
            algorithms=["RS256"],  # pinned: never taken from the header
            audience=RECEIVER.id,
            issuer=sdk_issuer.url,
            options={"require": ["exp", "iat", "nbf", "iss", "sub", "jti"]},
        )
        header, claims = decoded["header"], decoded["payload"]
        assert (header["alg"], header["typ"], header["cat"]) == ("RS256", "JWT", M2M_JWT_CATEGORY)
        assert claims["sub"] == CALLER.id
        assert claims["jti"] == created.id
        assert claims["scopes"] == RECEIVER.id
        assert claims["aud"] == [RECEIVER.id]
        assert claims["purpose"] == "sdk-conformance"
        # Whole seconds: the token lives at least the 60 s asked for, at most 1 s more.
        assert 60 <= claims["exp"] - claims["iat"] <= 61
        assert claims["nbf"] <= time.time() + 5
        assert claims["exp"] * 1000 == created.expiration
        assert created.expiration >= created.created_at + 60_000


def test_jwt_token_verifies_with_sdk_helper_and_instance_key(caller, sdk_issuer):
    created = caller.m2m.create_token(token_format="jwt", seconds_until_expiration=60)
    # The helper fetches {api_url}/v1/jwks with the sk, then checks RS256 and the audience.
    options = VerifyTokenOptions(
        secret_key=TEST_SECRET_KEY, api_url=sdk_issuer.url, audience=RECEIVER.id
    )
    claims = verify_token(created.token, options)
    assert (claims["sub"], claims["jti"]) == (CALLER.id, created.id)

    wrong_audience = VerifyTokenOptions(
        secret_key=TEST_SECRET_KEY, api_url=sdk_issuer.url, audience=OUTSIDER.id
    )
    with pytest.raises(TokenVerificationError) as caught:
        verify_token(created.token, wrong_audience)
    assert caught.value.reason == TokenVerificationErrorReason.TOKEN_INVALID_AUDIENCE


def test_jwt_with_reserved_claim_is_400_machine_token_reserved_claim(caller):
    with pytest.raises(models.CreateM2MTokenM2mResponseBody) as caught:
        caller.m2m.create_token(token_format="jwt", claims={"sub": OUTSIDER.id})
    assert_clerk_error(caught.value, 400, "machine_token_reserved_claim")
    assert caught.value.data.errors[0].code == "machine_token_reserved_claim"


def test_claims_round_trip_through_create_verify_and_list(caller, receiver):
    claims = {"role": "reporter", "n": 3, "nested": {"ids": [1, 2], "ok": True}}
    created = caller.m2m.create_token(seconds_until_expiration=60, claims=claims)
    assert created.claims == claims
    assert receiver.m2m.verify_token(token=created.token).claims == claims
    listed = caller.m2m.list_tokens(subject=CALLER.id, limit=100)
    assert {t.id: t.claims for t in listed.m2m_tokens}[created.id] == claims


def test_min_remaining_ttl_reuses_a_live_token_minted_without_the_parameter(admin, connect):
    """Like Clerk: any live opaque token with identical claims and scopes and enough time left
    is handed back, whether or not it was itself created with min_remaining_ttl_seconds."""
    sender, target = new_pair(admin, "reuse-plain")
    sender_sdk = connect(sender.secret_key)

    plain = sender_sdk.m2m.create_token(seconds_until_expiration=120, claims={"job": "a"})
    reused = sender_sdk.m2m.create_token(
        seconds_until_expiration=120, claims={"job": "a"}, min_remaining_ttl_seconds=30
    )
    unclaimed = sender_sdk.m2m.create_token(seconds_until_expiration=120)
    reused_unclaimed = sender_sdk.m2m.create_token(min_remaining_ttl_seconds=30)

    assert (reused.id, reused.token, reused.expiration) == (plain.id, plain.token, plain.expiration)
    assert connect(target.secret_key).m2m.verify_token(token=reused.token).id == plain.id
    assert (reused_unclaimed.id, reused_unclaimed.token) == (unclaimed.id, unclaimed.token)
    assert sender_sdk.m2m.list_tokens(subject=sender.id).total_count == 2


# --- listing --------------------------------------------------------------------------------


def test_list_tokens_is_newest_first_with_limit_offset_paging(admin, connect, wire):
    sender, _ = new_pair(admin, "list")
    sender_sdk = connect(sender.secret_key)
    minted = []
    for _ in range(3):
        minted.append(sender_sdk.m2m.create_token(seconds_until_expiration=60).id)
        time.sleep(0.005)  # distinct created_at milliseconds
    sender_sdk.m2m.create_token(token_format="jwt", seconds_until_expiration=60)  # not stored
    newest_first = list(reversed(minted))

    listing = sender_sdk.m2m.list_tokens(subject=sender.id)
    assert listing.total_count == 3
    assert token_ids(listing) == newest_first
    assert all("token" not in item for item in wire.last().json()["m2m_tokens"])
    assert all(t.subject == sender.id and t.last_used_at is None for t in listing.m2m_tokens)

    page1 = sender_sdk.m2m.list_tokens(subject=sender.id, limit=2, offset=0)
    page2 = sender_sdk.m2m.list_tokens(subject=sender.id, limit=2, offset=2)
    assert (page1.total_count, page2.total_count) == (3, 3)
    assert token_ids(page1) + token_ids(page2) == newest_first

    assert token_ids(admin.m2m.list_tokens(subject=sender.id)) == newest_first


def test_list_tokens_hides_expired_unless_asked(connect, expired_token):
    sender, token = expired_token.sender, expired_token.token
    sender_sdk = connect(sender.secret_key)
    live = sender_sdk.m2m.create_token(seconds_until_expiration=60)

    default = sender_sdk.m2m.list_tokens(subject=sender.id)
    assert (token_ids(default), default.total_count) == ([live.id], 1)

    with_expired = sender_sdk.m2m.list_tokens(subject=sender.id, expired=True)
    assert with_expired.total_count == 2
    by_id = {t.id: t for t in with_expired.m2m_tokens}
    assert by_id[token.id].expired is True
    assert by_id[live.id].expired is False


# --- revocation -----------------------------------------------------------------------------


def test_revoked_token_is_listed_with_reason_and_fails_verification(caller, receiver, admin):
    created = caller.m2m.create_token(seconds_until_expiration=60)

    revoked = caller.m2m.revoke_token(m2m_token_id=created.id, revocation_reason="compromised")
    assert revoked.object == models.RevokeM2MTokenObject.MACHINE_TO_MACHINE_TOKEN
    assert (revoked.id, revoked.revoked, revoked.revocation_reason) == (
        created.id,
        True,
        "compromised",
    )
    assert revoked.updated_at >= created.updated_at

    listed = caller.m2m.list_tokens(subject=CALLER.id, revoked=True, limit=100)
    entry = {t.id: t for t in listed.m2m_tokens}[created.id]
    assert (entry.revoked, entry.revocation_reason) == (True, "compromised")

    for verifier in (receiver, admin):
        with pytest.raises(models.VerifyM2MTokenM2mResponseResponseBody) as caught:
            verifier.m2m.verify_token(token=created.token)
        assert_clerk_error(caught.value, 404, "resource_not_found")


def test_instance_key_revokes_any_token_and_reason_may_be_omitted(caller, admin):
    created = caller.m2m.create_token(seconds_until_expiration=60)
    revoked = admin.m2m.revoke_token(m2m_token_id=created.id)
    assert (revoked.revoked, revoked.revocation_reason) == (True, None)


def test_jwt_token_cannot_be_revoked(caller):
    created = caller.m2m.create_token(token_format="jwt", seconds_until_expiration=60)
    with pytest.raises(models.RevokeM2MTokenM2mResponseBody) as caught:  # the SDK's 400
        caller.m2m.revoke_token(m2m_token_id=created.id, revocation_reason="try")
    assert_clerk_error(caught.value, 400)


def test_revoking_an_unknown_token_is_404(admin):
    with pytest.raises(models.RevokeM2MTokenM2mResponseResponseBody) as caught:
        admin.m2m.revoke_token(m2m_token_id="mt_" + "0" * 32)
    assert_clerk_error(caught.value, 404)


# --- verification ---------------------------------------------------------------------------


def test_verify_in_scope_returns_token_and_records_last_used_at(caller, receiver, wire):
    created = caller.m2m.create_token(seconds_until_expiration=60, claims={"k": "v"})

    verified = receiver.m2m.verify_token(token=created.token)
    assert isinstance(verified, models.VerifyM2MTokenResponseBody)
    assert verified.object == models.VerifyM2MTokenObject.MACHINE_TO_MACHINE_TOKEN
    assert (verified.id, verified.subject, verified.scopes) == (
        created.id,
        CALLER.id,
        [RECEIVER.id],
    )
    assert (verified.revoked, verified.expired, verified.claims) == (False, False, {"k": "v"})
    assert verified.expiration == created.expiration
    assert "token" not in wire.last().json()

    listed = caller.m2m.list_tokens(subject=CALLER.id, limit=100)
    entry = {t.id: t for t in listed.m2m_tokens}[created.id]
    assert entry.last_used_at is not None
    assert created.created_at <= entry.last_used_at <= now_ms() + 1_000


def test_verify_out_of_scope_raises_the_sdk_404_error(caller, outsider):
    created = caller.m2m.create_token(seconds_until_expiration=60)
    # The outsider is not in the token's scopes, and neither is the minting machine itself.
    for verifier in (outsider, caller):
        with pytest.raises(models.VerifyM2MTokenM2mResponseResponseBody) as caught:
            verifier.m2m.verify_token(token=created.token)
        assert_clerk_error(caught.value, 404, "resource_not_found")
        assert caught.value.data.errors[0].code == "resource_not_found"
        assert created.token not in caught.value.body


def test_sdk_verify_token_helper_posts_secret_to_both_prefixes(caller, sdk_issuer):
    created = caller.m2m.create_token(seconds_until_expiration=60)
    for api_url in (f"{sdk_issuer.url}/v1", sdk_issuer.url):
        options = VerifyTokenOptions(api_url=api_url, machine_secret_key=RECEIVER.secret_key)
        verified = verify_token(created.token, options)  # POST {"secret": token}
        assert verified["object"] == "machine_to_machine_token"
        assert (verified["id"], verified["subject"]) == (created.id, CALLER.id)

    outsider = VerifyTokenOptions(
        api_url=f"{sdk_issuer.url}/v1", machine_secret_key=OUTSIDER.secret_key
    )
    with pytest.raises(TokenVerificationError) as caught:
        verify_token(created.token, outsider)
    assert caught.value.reason == TokenVerificationErrorReason.TOKEN_INVALID


# --- authentication errors ------------------------------------------------------------------


def test_unknown_machine_key_is_401_machine_secret_key_invalid(connect, caller):
    stranger = connect(UNKNOWN_MACHINE_KEY)
    created = caller.m2m.create_token(seconds_until_expiration=60)
    attempts = (
        lambda: stranger.m2m.create_token(seconds_until_expiration=60),
        lambda: stranger.m2m.verify_token(token=created.token),
        lambda: stranger.m2m.list_tokens(subject=CALLER.id),
    )
    for attempt in attempts:
        with pytest.raises(models.SDKError) as caught:  # the SDK has no typed 401 for m2m
            attempt()
        assert_clerk_error(caught.value, 401, "machine_secret_key_invalid")
        assert UNKNOWN_MACHINE_KEY not in caught.value.body


def test_unknown_instance_key_is_401_clerk_key_invalid(connect):
    stranger = connect(UNKNOWN_INSTANCE_KEY)

    with pytest.raises(models.ClerkErrors) as caught:  # typed: machines routes map 401
        stranger.machines.list()
    assert_clerk_error(caught.value, 401, "clerk_key_invalid")
    assert caught.value.data.errors[0].code == "clerk_key_invalid"

    with pytest.raises(models.SDKError) as caught:
        stranger.m2m.list_tokens(subject=CALLER.id)
    assert_clerk_error(caught.value, 401, "clerk_key_invalid")
    assert UNKNOWN_INSTANCE_KEY not in caught.value.body


def test_sdk_clients_built_here_never_retry_a_5xx():
    """Guards the premise of this module: a 5xx from the issuer fails a test at once."""
    calls: list[httpx.Request] = []

    def always_503(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, headers={"Retry-After": "1"}, json={"errors": []})

    with httpx.Client(transport=httpx.MockTransport(always_503)) as http:
        clerk = sdk_client(CALLER.secret_key, "http://127.0.0.1:9/v1", http)
        with pytest.raises(models.SDKError) as caught:
            clerk.m2m.create_token(seconds_until_expiration=60)
    assert caught.value.status_code == 503
    assert len(calls) == 1
