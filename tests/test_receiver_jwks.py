"""JwksCache: keys parsed once with a lifespan, one fetch per cooldown whatever the trigger,
and the last good keys kept when a refresh fails. A fake clock and fetcher: no network, no sleep."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from receiver_app.jwks import JwksCache, KeysUnavailableError
from tests.fakes import FakeClock

KEY_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig", **extra}


class FakeJwks:
    """A fetcher that serves `document`, or raises when `failing`; counts its calls."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.document: Any = {"keys": list(keys)}
        self.failing = False
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.failing:
            raise ConnectionError("issuer down")
        return self.document


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def cache(fetch: FakeJwks, clock: FakeClock) -> JwksCache:
    return JwksCache(fetch, lifespan=300, cooldown=30, clock=clock)


def public_numbers(key: Any) -> Any:
    return key.public_numbers()


def test_keys_are_fetched_once_and_reused_within_the_lifespan(clock):
    fetch = FakeJwks(jwk(KEY_A, "a"))
    keys = cache(fetch, clock)
    for _ in range(10):
        assert public_numbers(keys.key_for("a")) == KEY_A.public_key().public_numbers()
    clock.advance(299)
    keys.key_for("a")
    assert fetch.calls == 1


def test_keys_are_refetched_after_the_lifespan(clock):
    fetch = FakeJwks(jwk(KEY_A, "a"))
    keys = cache(fetch, clock)
    keys.key_for("a")
    clock.advance(301)
    keys.key_for("a")
    assert fetch.calls == 2


def test_unknown_kids_trigger_at_most_one_fetch_per_cooldown(clock):
    fetch = FakeJwks(jwk(KEY_A, "a"))
    keys = cache(fetch, clock)
    keys.key_for("a")
    clock.advance(31)
    for i in range(100):
        assert keys.key_for(f"random-{i}") is None
    assert fetch.calls == 2
    clock.advance(10)
    assert keys.key_for("random-again") is None
    assert fetch.calls == 2
    clock.advance(25)
    keys.key_for("random-later")
    assert fetch.calls == 3


def test_a_rotated_in_key_is_found_after_the_cooldown(clock):
    fetch = FakeJwks(jwk(KEY_A, "a"))
    keys = cache(fetch, clock)
    keys.key_for("a")
    fetch.document = {"keys": [jwk(KEY_A, "a"), jwk(KEY_B, "b")]}
    assert keys.key_for("b") is None  # within the cooldown of the first fetch
    clock.advance(30)
    assert public_numbers(keys.key_for("b")) == KEY_B.public_key().public_numbers()
    assert keys.key_for("a") is not None


def test_failed_refresh_keeps_the_last_good_keys(clock):
    fetch = FakeJwks(jwk(KEY_A, "a"))
    keys = cache(fetch, clock)
    keys.key_for("a")
    fetch.failing = True
    clock.advance(301)
    for _ in range(50):
        assert keys.key_for("a") is not None
    assert fetch.calls == 2  # the stale set is retried once per cooldown, not per call
    clock.advance(31)
    assert keys.key_for("a") is not None
    assert fetch.calls == 3


def test_refresh_with_unusable_document_keeps_the_last_good_keys(clock):
    fetch = FakeJwks(jwk(KEY_A, "a"))
    keys = cache(fetch, clock)
    keys.key_for("a")
    clock.advance(300)  # the set is now stale: every round below really fetches a bad document
    documents = ({"keys": []}, {"nope": 1}, ["not", "a", "dict"], {"keys": "x"})
    for round_number, document in enumerate(documents, start=2):
        fetch.document = document
        clock.advance(31)
        assert public_numbers(keys.key_for("a")) == KEY_A.public_key().public_numbers()
        assert fetch.calls == round_number


def test_no_key_ever_fetched_raises_keys_unavailable(clock):
    fetch = FakeJwks(jwk(KEY_A, "a"))
    fetch.failing = True
    keys = cache(fetch, clock)
    with pytest.raises(KeysUnavailableError):
        keys.key_for("a")
    with pytest.raises(KeysUnavailableError):
        keys.key_for("a")
    assert fetch.calls == 1


def test_only_rs256_signing_keys_with_a_kid_are_kept(clock):
    fetch = FakeJwks(
        jwk(KEY_A, "enc", use="enc"),
        jwk(KEY_A, "rs512", alg="RS512"),
        jwk(ec.generate_private_key(ec.SECP256R1()), "ec"),
        {**jwk(KEY_A, "x"), "kid": None},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        jwk(KEY_B, "good", alg="RS256"),
    )
    keys = cache(fetch, clock)
    assert keys.key_for("good") is not None
    for kid in ("enc", "rs512", "ec", "hmac", "x"):
        assert keys.key_for(kid) is None


def test_token_without_kid_never_triggers_a_fetch(clock):
    fetch = FakeJwks(jwk(KEY_A, "a"))
    assert cache(fetch, clock).key_for(None) is None
    assert fetch.calls == 0
