"""A bounded cache of positive verifications, used twice by the verifier: the opaque-token
cache (`M2M_VERIFY_CACHE_SECONDS`, off by default) and the verified-JWT memo
(`M2M_JWT_CACHE_SECONDS`, 60 s by default).

Trade-off: while an entry lives (at most `ttl` seconds, never past the token's expiration) the
token is accepted without a new check: a revoked opaque token is still accepted, the issuer's
usage counters see fewer verifications, and a JWT whose key was withdrawn keeps passing. Tokens
are kept only as SHA-256 digests, and at most `max_entries` of them (least recently used go).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class VerifyCache(Generic[T]):
    """Maps a token (kept only as its SHA-256) to its verified record until a deadline."""

    def __init__(
        self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> T | None:
        """The cached record, or None when absent or past its deadline."""
        key = _digest(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            deadline, record = entry
            if self._clock() >= deadline:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return record

    def put(self, token: str, record: T, expires_at: float | None) -> None:
        """Keep `record` for `ttl` seconds, or until `expires_at` (Unix seconds) if sooner."""
        now = self._clock()
        deadline = now + self.ttl if expires_at is None else min(now + self.ttl, expires_at)
        if deadline <= now:
            return
        key = _digest(token)
        with self._lock:
            self._entries[key] = (deadline, record)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
