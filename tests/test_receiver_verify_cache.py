"""VerifyCache: bounded, never past the token's expiration, tokens kept only as hashes."""

from __future__ import annotations

from receiver_app.verify_cache import VerifyCache
from tests.fakes import FakeClock


def test_entry_is_served_until_its_ttl():
    clock = FakeClock(1_700_000_000.0)
    cache: VerifyCache[str] = VerifyCache(ttl=10, clock=clock)
    cache.put("mt_a", "record", expires_at=None)
    clock.advance(9.9)
    assert cache.get("mt_a") == "record"
    clock.advance(0.1)
    assert cache.get("mt_a") is None


def test_entry_is_never_served_past_the_token_expiration():
    clock = FakeClock(1_700_000_000.0)
    cache: VerifyCache[str] = VerifyCache(ttl=60, clock=clock)
    cache.put("mt_a", "record", expires_at=clock.now + 2)
    clock.advance(1.9)
    assert cache.get("mt_a") == "record"
    clock.advance(0.1)
    assert cache.get("mt_a") is None


def test_already_expired_token_is_not_cached():
    clock = FakeClock(1_700_000_000.0)
    cache: VerifyCache[str] = VerifyCache(ttl=60, clock=clock)
    cache.put("mt_a", "record", expires_at=clock.now - 1)
    assert cache.get("mt_a") is None
    assert len(cache) == 0


def test_cache_is_bounded_and_evicts_the_least_recently_used():
    cache: VerifyCache[int] = VerifyCache(ttl=60, max_entries=3, clock=FakeClock(1_700_000_000.0))
    for i in range(3):
        cache.put(f"mt_{i}", i, expires_at=None)
    assert cache.get("mt_0") == 0  # mt_0 is now the most recently used
    cache.put("mt_3", 3, expires_at=None)
    assert len(cache) == 3
    assert cache.get("mt_1") is None
    assert [cache.get(f"mt_{i}") for i in (0, 2, 3)] == [0, 2, 3]


def test_tokens_are_kept_only_as_hashes():
    cache: VerifyCache[str] = VerifyCache(ttl=60, clock=FakeClock(1_700_000_000.0))
    cache.put("mt_secret_token_value", "record", expires_at=None)
    assert all(b"mt_secret" not in key for key in cache._entries)
