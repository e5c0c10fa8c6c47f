"""RS256 signing keys for JWT-format tokens: persisted, rotated, published as a JWKS.

Exactly one key is active (signs new tokens). The next key is published ahead of use, so a
verifier that refreshed its JWKS since the last rotation already holds the key a rotation
activates (publish before signing). A retired key stays published while any token it signed
is still unexpired, so verifiers holding such a token can still find its key.
Parsed keys are cached per process by `kid`; a kid's key material never changes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from . import db, ids

_private_cache: dict[str, RSAPrivateKey] = {}
_public_cache: dict[str, RSAPublicKey] = {}


@dataclass
class SigningKey:
    kid: str
    private_key: RSAPrivateKey


def _generate() -> tuple[str, str]:
    """A new 2048-bit RSA key as (PKCS#8 PEM, public JWK JSON without kid)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return pem, json.dumps({"kty": "RSA", "n": jwk["n"], "e": jwk["e"]})


def _insert_active(conn: sqlite3.Connection, kid: str, pem: str, jwk: str, now: int) -> str:
    conn.execute(
        "INSERT INTO signing_keys (kid, private_pem, public_jwk, created_at, retired_at)"
        " VALUES (?, ?, ?, ?, NULL)",
        (kid, pem, jwk, now),
    )
    return kid


def _active_kid(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchone()
    return row[0] if row else None


def _store_next(conn: sqlite3.Connection, pem: str, jwk: str, now: int) -> None:
    conn.execute(
        "INSERT INTO next_signing_key (kid, private_pem, public_jwk, created_at)"
        " VALUES (?, ?, ?, ?)",
        (ids.new_kid(), pem, jwk, now),
    )


def ensure_signing_key(conn: sqlite3.Connection) -> str:
    """The active kid, creating the first key and the published next key when missing.
    Several workers starting at once may each generate keys, but only the first to take the
    write lock stores them."""
    active = _active_kid(conn)
    has_next = conn.execute("SELECT 1 FROM next_signing_key").fetchone() is not None
    if active and has_next:
        return active
    generated = [_generate() for _ in range(2 - bool(active) - has_next)]
    with db.write(conn):
        now = db.now_ms()
        active = _active_kid(conn)
        if active is None:
            pem, jwk = generated.pop()
            active = _insert_active(conn, ids.new_kid(), pem, jwk, now)
        if conn.execute("SELECT 1 FROM next_signing_key").fetchone() is None:
            pem, jwk = generated.pop() if generated else _generate()
            _store_next(conn, pem, jwk, now)
        return active


def rotate_signing_key(conn: sqlite3.Connection) -> tuple[str, str | None]:
    """Retire the active key, activate the already-published next key and publish a new next
    key; returns (new active kid, retired kid)."""
    ensure_signing_key(conn)
    pem, jwk = _generate()
    now = db.now_ms()
    with db.write(conn):
        old = _active_kid(conn)
        upcoming = conn.execute("SELECT * FROM next_signing_key").fetchone()
        conn.execute("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL", (now,))
        new = _insert_active(
            conn, upcoming["kid"], upcoming["private_pem"], upcoming["public_jwk"], now
        )
        conn.execute("DELETE FROM next_signing_key")
        _store_next(conn, pem, jwk, now)
    return new, old


def active_signing_key(conn: sqlite3.Connection) -> SigningKey:
    """The key that signs new tokens (its parsed form cached per process)."""
    kid = conn.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchone()
    if kid is None:
        kid = (ensure_signing_key(conn),)
    kid = kid[0]
    key = _private_cache.get(kid)
    if key is None:
        pem = conn.execute("SELECT private_pem FROM signing_keys WHERE kid = ?", (kid,)).fetchone()
        loaded = serialization.load_pem_private_key(pem[0].encode("ascii"), password=None)
        assert isinstance(loaded, RSAPrivateKey)
        key = _private_cache[kid] = loaded
    return SigningKey(kid, key)


def public_key(conn: sqlite3.Connection, kid: str) -> RSAPublicKey | None:
    """The public key for `kid` if that key is still published, else None."""
    if not isinstance(kid, str) or len(kid) > 64:
        return None
    cached = _public_cache.get(kid)
    if cached is not None:
        return cached
    row = conn.execute("SELECT public_jwk FROM signing_keys WHERE kid = ?", (kid,)).fetchone()
    if row is None:
        return None
    key = RSAAlgorithm.from_jwk(row[0])
    assert isinstance(key, RSAPublicKey)
    _public_cache[kid] = key
    return key


def jwks(conn: sqlite3.Connection) -> dict[str, Any]:
    """The published keys: the active one, the next one (published ahead of use) and every
    retired key with a live token."""
    rows = conn.execute(
        "SELECT kid, public_jwk, 0 AS upcoming, created_at FROM signing_keys k"
        " WHERE retired_at IS NULL OR EXISTS ("
        " SELECT 1 FROM jwt_issued j WHERE j.kid = k.kid AND j.expiration > ?)"
        " UNION ALL SELECT kid, public_jwk, 1, created_at FROM next_signing_key"
        " ORDER BY upcoming, created_at DESC",
        (db.now_ms(),),
    ).fetchall()
    keys = []
    for row in rows:
        jwk = json.loads(row["public_jwk"])
        keys.append({"use": "sig", "kty": "RSA", "kid": row["kid"], "alg": "RS256", **jwk})
    return {"keys": keys}
