"""Tokens the verification users present, prepared once when a test starts (never per request),
and the one JWT that is re-minted every few seconds so a run sees tokens from a rotated key."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent.lock
import jwt

from loadtest.issuer_client import IssuerClient

GOOD_TOKEN_TTL_S = 3600
EXPIRING_TOKEN_TTL_S = 1


@dataclass(frozen=True)
class PreparedTokens:
    """Good, expired, revoked and out-of-scope tokens, minted at test start."""

    opaque: str
    jwt: str
    expired_opaque: str
    expired_jwt: str
    revoked_opaque: str
    # Monotonic time after which the expiring tokens are past `exp` plus the receiver's leeway.
    expired_after: float
    outsider_opaque: str | None = None
    outsider_jwt: str | None = None

    @classmethod
    def prepare(
        cls,
        issuer: IssuerClient,
        caller_key: str,
        outsider_key: str | None,
        expired_grace_s: float,
    ) -> PreparedTokens:
        """Mint every token the users need; raises IssuerError on the first refusal."""
        expired_opaque = issuer.mint(caller_key, "opaque", EXPIRING_TOKEN_TTL_S)
        expired_jwt = issuer.mint(caller_key, "jwt", EXPIRING_TOKEN_TTL_S)
        expired_after = time.monotonic() + EXPIRING_TOKEN_TTL_S + expired_grace_s
        revoked = issuer.mint(caller_key, "opaque", GOOD_TOKEN_TTL_S)
        issuer.revoke(caller_key, revoked.id)
        outsider = (None, None)
        if outsider_key:
            outsider = (
                issuer.mint(outsider_key, "opaque", GOOD_TOKEN_TTL_S).token,
                issuer.mint(outsider_key, "jwt", GOOD_TOKEN_TTL_S).token,
            )
        return cls(
            opaque=issuer.mint(caller_key, "opaque", GOOD_TOKEN_TTL_S).token,
            jwt=issuer.mint(caller_key, "jwt", GOOD_TOKEN_TTL_S).token,
            expired_opaque=expired_opaque.token,
            expired_jwt=expired_jwt.token,
            revoked_opaque=revoked.token,
            expired_after=expired_after,
            outsider_opaque=outsider[0],
            outsider_jwt=outsider[1],
        )

    def expired_ready(self) -> bool:
        return time.monotonic() >= self.expired_after


def key_id(token: str) -> str:
    """The `kid` a JWT names in its header, only to label requests by signing key (the receiver
    verifies the token; this reads the header without trusting it)."""
    try:
        return str(jwt.get_unverified_header(token).get("kid", "none"))
    except jwt.PyJWTError:
        return "unreadable"


@dataclass
class FreshJwt:
    """One JWT shared by the users of a process, re-minted when older than `refresh_s`.

    `mint` is called by at most one greenlet at a time; the others keep the current token.
    """

    mint: Callable[[], str | None]
    refresh_s: float
    token: str | None = None
    minted_at: float = float("-inf")
    _lock: gevent.lock.Semaphore = field(default_factory=gevent.lock.Semaphore, repr=False)

    def current(self) -> str | None:
        stale = time.monotonic() - self.minted_at >= self.refresh_s
        if stale and not self._lock.locked():
            with self._lock:
                # On failure `mint` reports it and returns None: keep the previous token and
                # back off for `refresh_s` like after a success.
                self.token = self.mint() or self.token
                self.minted_at = time.monotonic()
        return self.token
