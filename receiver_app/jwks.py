"""Where JWT verification keys come from: the issuer's JWKS (cached) or one fixed PEM key."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWKSet

log = logging.getLogger(__name__)


class KeysUnavailableError(Exception):
    """No key set has ever been loaded, so no JWT can be checked right now."""


class JwksCache:
    """The issuer's RS256 signing keys by `kid`, parsed once and kept for `lifespan` seconds.

    Fetches happen at most once per `cooldown` seconds, whatever triggered them (an expired set
    or an unknown `kid`), so random kids cannot cause a fetch storm. A failed fetch keeps the
    last good keys: JWTs keep verifying while the issuer is down.
    """

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any]],
        *,
        lifespan: float = 300,
        cooldown: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.lifespan = lifespan
        self.cooldown = cooldown
        self._clock = clock
        self._keys: dict[str, RSAPublicKey] = {}
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()

    def key_for(self, kid: str | None) -> RSAPublicKey | None:
        """The public key named `kid`, or None when the issuer does not publish it.

        Raises KeysUnavailableError while no key set has ever been fetched.
        """
        if kid is None:
            return None  # a JWKS key is only ever chosen by its kid
        if self._is_stale():
            self._refresh(wait=not self._keys)
        key = self._keys.get(kid)
        if key is None:
            self._refresh(wait=True)
            key = self._keys.get(kid)
        if key is None and self._loaded_at is None:
            raise KeysUnavailableError("the issuer's JWKS could not be fetched")
        return key

    def _is_stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at >= self.lifespan

    def _refresh(self, wait: bool) -> None:
        """Fetch the key set unless a fetch was attempted within `cooldown` seconds.

        With `wait=False` a caller that finds another thread fetching goes on with the keys it has.
        """
        if not self._lock.acquire(blocking=wait):
            return
        try:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self.cooldown:
                return
            self._attempted_at = now
            try:
                keys = _rsa_signing_keys(self._fetch())
            except Exception as exc:  # a bad answer must never discard the last good keys
                log.warning("JWKS refresh failed, keeping %d known keys: %s", len(self._keys), exc)
                return
            self._keys = keys
            self._loaded_at = self._clock()
        finally:
            self._lock.release()


def _rsa_signing_keys(jwks: Mapping[str, Any]) -> dict[str, RSAPublicKey]:
    """The RS256 signing keys of a JWKS document, by kid; raises when none is usable."""
    key_set = PyJWKSet.from_dict(dict(jwks))
    keys = {
        jwk.key_id: jwk.key
        for jwk in key_set.keys
        if jwk.key_id
        and jwk.key_type == "RSA"
        and jwk.algorithm_name == "RS256"
        and jwk.public_key_use in ("sig", None)
    }
    if not keys:
        raise ValueError("the JWKS holds no RS256 signing key with a kid")
    return keys


class StaticKey:
    """One PEM public key (`CLERK_JWT_KEY`) used for every JWT: verification without network."""

    def __init__(self, pem: str) -> None:
        key = load_pem_public_key(pem.replace("\\n", "\n").encode())
        if not isinstance(key, RSAPublicKey):
            raise ValueError("CLERK_JWT_KEY must be an RSA public key in PEM format")
        self._key = key

    def key_for(self, kid: str | None) -> RSAPublicKey:
        return self._key
