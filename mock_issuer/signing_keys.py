"""RS256 signing keys for JWT-format tokens: persisted, rotated, published as a JWKS.

Exactly one key is active (signs new tokens). A retired key stays published while any token
it signed is still unexpired, so verifiers holding such a token can still find its key.
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


def _insert_active(conn: sqlite3.Connection, pem: str, jwk: str, now: int) -> str:
    kid = ids.new_kid()
    conn.execute(
        "INSERT INTO signing_keys (kid, private_pem, public_jwk, created_at, retired_at)"
        " VALUES (?, ?, ?, ?, NULL)",
        (kid, pem, jwk, now),
    )
    return kid


def ensure_signing_key(conn: sqlite3.Connection) -> str:
    """The active kid, creating the first key if there is none. Several workers starting at
    once may each generate a key, but only the first to take the write lock stores one."""
    row = conn.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchone()
    if row:
        return row[0]
    pem, jwk = _generate()
    with db.write(conn):
        row = conn.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchone()
        if row:
            return row[0]
        return _insert_active(conn, pem, jwk, db.now_ms())


def rotate_signing_key(conn: sqlite3.Connection) -> tuple[str, str | None]:
    """Retire the active key and make a new one active; returns (new kid, retired kid)."""
    pem, jwk = _generate()
    now = db.now_ms()
    with db.write(conn):
        row = conn.execute("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetchone()
        old = row[0] if row else None
        conn.execute("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL", (now,))
        new = _insert_active(conn, pem, jwk, now)
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
    """The published keys: the active one and every retired key with a live token."""
    rows = conn.execute(
        "SELECT kid, public_jwk FROM signing_keys k WHERE retired_at IS NULL OR EXISTS ("
        " SELECT 1 FROM jwt_issued j WHERE j.kid = k.kid AND j.expiration > ?)"
        " ORDER BY created_at DESC",
        (db.now_ms(),),
    ).fetchall()
    keys = []
    for row in rows:
        jwk = json.loads(row["public_jwk"])
        keys.append({"use": "sig", "kty": "RSA", "kid": row["kid"], "alg": "RS256", **jwk})
    return {"keys": keys}
