"""M2M tokens: create (opaque or JWT), verify, list and revoke, with usage records.

Opaque tokens are 256 random bits; only their SHA-256 is looked up. Verification is one
indexed UPDATE ... RETURNING that checks revocation, expiry and (for a machine verifier)
scope and stamps `last_used_at` in the same statement.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import db, ids, machines, signing_keys, usage
from .errors import ClerkError, invalid_param, not_found

M2M_JWT_CATEGORY = "cl_B7d4PD333AAA"
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scopes", "azp"})
MAX_TOKEN_LENGTH = 8192  # longest token the verify route (and our receiver) accepts
MAX_CLAIMS_BYTES = 4096  # serialized claims, so a JWT carrying them stays under the above
# Containers nested in claims. Checked at creation, before anything is written, so every later
# reader (listing, verifying, a receiver's JSON parser) handles what was stored.
MAX_CLAIMS_DEPTH = 32
# A token must live long enough to be verified at least once: under a second it was minted
# already expired (201 with `expired: true`, then 404 on verify). Machine default TTLs are
# whole seconds >= 1 already; this is the floor for seconds_until_expiration.
MIN_LIFETIME_SECONDS = 1
_WRAP_INFO = b"mock_issuer token reuse"


@dataclass
class M2MToken:
    id: str
    subject: str
    claims: Any
    scopes: list[str]
    revoked: bool
    revocation_reason: str | None
    expiration: int
    last_used_at: int | None
    created_at: int
    updated_at: int

    @property
    def expired(self) -> bool:
        return self.expiration <= db.now_ms()

    def to_dict(self, token: str | None = None) -> dict[str, Any]:
        """Clerk's token object; `token` (the secret) only in the answer to a create."""
        obj: dict[str, Any] = {
            "object": "machine_to_machine_token",
            "id": self.id,
            "subject": self.subject,
            "claims": self.claims,
            "scopes": self.scopes,
            "revoked": self.revoked,
            "revocation_reason": self.revocation_reason,
            "expired": self.expired,
            "expiration": self.expiration,
            "last_used_at": self.last_used_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if token is not None:
            obj["token"] = token
        return obj


@dataclass
class CreatedToken:
    token: M2MToken
    secret: str


def _row_to_token(row: sqlite3.Row) -> M2MToken:
    return M2MToken(
        id=row["id"],
        subject=row["subject"],
        claims=json.loads(row["claims"]),
        scopes=json.loads(row["scopes"]),
        revoked=bool(row["revoked"]),
        revocation_reason=row["revocation_reason"],
        expiration=row["expiration"],
        last_used_at=row["last_used_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---- reuse (min_remaining_ttl_seconds) ----


def _wrap_key(machine_secret_key: str, instance_secret_key: str) -> AESGCM:
    """Key that wraps a machine's reusable tokens: HKDF of the machine's secret key, salted
    with an HMAC of the instance secret key. The machine key sits in the database, the
    instance key does not (it comes from the environment), so the database file alone
    cannot unwrap a copy. Rotating the machine key, or changing CLERK_SECRET_KEY, ends
    reuse of earlier tokens (later creates just mint anew)."""
    salt = hmac.new(instance_secret_key.encode("utf-8"), _WRAP_INFO, hashlib.sha256).digest()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_WRAP_INFO)
    return AESGCM(hkdf.derive(machine_secret_key.encode("utf-8")))


def _wrap(machine_secret_key: str, instance_secret_key: str, token_id: str, secret: str) -> bytes:
    nonce = os.urandom(12)
    key = _wrap_key(machine_secret_key, instance_secret_key)
    return nonce + key.encrypt(nonce, secret.encode(), token_id.encode())


def _unwrap(
    machine_secret_key: str, instance_secret_key: str, token_id: str, wrapped: bytes
) -> str | None:
    key = _wrap_key(machine_secret_key, instance_secret_key)
    try:
        plain = key.decrypt(wrapped[:12], wrapped[12:], token_id.encode())
    except InvalidTag:
        return None
    return plain.decode()


def _find_reusable(
    conn: sqlite3.Connection,
    machine_id: str,
    machine_secret_key: str,
    instance_secret_key: str,
    claims_json: str,
    scopes_json: str,
    min_remaining_ms: int,
    now: int,
) -> CreatedToken | None:
    rows = conn.execute(
        "SELECT * FROM m2m_tokens WHERE subject = ? AND revoked = 0 AND expiration > ?"
        " AND claims = ? AND scopes = ? AND wrapped IS NOT NULL"
        " ORDER BY expiration DESC LIMIT 5",
        (machine_id, now + min_remaining_ms, claims_json, scopes_json),
    ).fetchall()
    for row in rows:
        secret = _unwrap(machine_secret_key, instance_secret_key, row["id"], row["wrapped"])
        if secret is not None:
            return CreatedToken(_row_to_token(row), secret)
    return None


# ---- create ----


def create_token(
    conn: sqlite3.Connection,
    machine_id: str,
    machine_secret_key: str,
    *,
    issuer_url: str,
    instance_secret_key: str,
    fmt: str = "opaque",
    seconds_until_expiration: float | None = None,
    claims: Any = None,
    min_remaining_ttl_seconds: int | None = None,
) -> CreatedToken:
    """Mint a token for `machine_id` (authenticated by `machine_secret_key`); scopes are a
    snapshot of the machine's scoped machines. With `min_remaining_ttl_seconds` (opaque only),
    a live token with the same claims and scopes and enough lifetime left is returned instead;
    `instance_secret_key` (CLERK_SECRET_KEY) keys the encrypted copy such a token keeps."""
    machine = machines.get_machine(conn, machine_id)
    if json_depth(claims) > MAX_CLAIMS_DEPTH:
        raise invalid_param("claims", f"must nest at most {MAX_CLAIMS_DEPTH} levels deep")
    if len(_canonical(claims)) > MAX_CLAIMS_BYTES:  # ASCII: non-ASCII is escaped
        raise invalid_param("claims", f"must serialize to at most {MAX_CLAIMS_BYTES} bytes of JSON")
    lifetime = (
        seconds_until_expiration
        if seconds_until_expiration is not None
        else machine.default_token_ttl
    )
    if min_remaining_ttl_seconds is not None:
        if fmt != "opaque":
            raise invalid_param(
                "min_remaining_ttl_seconds", "only opaque tokens can be reused", status=400
            )
        if min_remaining_ttl_seconds >= lifetime:
            raise invalid_param(
                "min_remaining_ttl_seconds",
                f"must be less than the token lifetime ({lifetime:g} s)",
                status=400,
            )
    if fmt == "jwt":
        return _create_jwt(conn, machine_id, lifetime, claims, issuer_url)
    return _create_opaque(
        conn,
        machine_id,
        machine_secret_key,
        instance_secret_key,
        lifetime,
        claims,
        min_remaining_ttl_seconds,
    )


def _create_opaque(
    conn: sqlite3.Connection,
    machine_id: str,
    machine_secret_key: str,
    instance_secret_key: str,
    lifetime: float,
    claims: Any,
    min_remaining_ttl_seconds: int | None,
) -> CreatedToken:
    token_id, secret = ids.new_token_id(), ids.new_token_secret()
    token_hash = ids.secret_hash(secret)
    # Like Clerk, a later create with min_remaining_ttl_seconds may hand back any live token,
    # whether or not it was minted with the parameter: each keeps a copy, encrypted.
    wrapped = _wrap(machine_secret_key, instance_secret_key, token_id, secret)
    claims_json = _canonical(claims)
    with db.write(conn):
        now = db.now_ms()
        scopes = machines.scoped_ids(conn, machine_id)
        scopes_json = _canonical(scopes)
        if min_remaining_ttl_seconds is not None:
            reused = _find_reusable(
                conn,
                machine_id,
                machine_secret_key,
                instance_secret_key,
                claims_json,
                scopes_json,
                min_remaining_ttl_seconds * 1000,
                now,
            )
            if reused is not None:
                usage.record(conn, "reuse", "opaque", machine_id, ts=now)
                return reused
        expiration = now + round(lifetime * 1000)
        conn.execute(
            "INSERT INTO m2m_tokens (id, token_hash, subject, claims, scopes, expiration,"
            " created_at, updated_at, wrapped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token_id,
                token_hash,
                machine_id,
                claims_json,
                scopes_json,
                expiration,
                now,
                now,
                wrapped,
            ),
        )
        usage.record(conn, "create", "opaque", machine_id, ts=now)
    token = M2MToken(token_id, machine_id, claims, scopes, False, None, expiration, None, now, now)
    return CreatedToken(token, secret)


def _create_jwt(
    conn: sqlite3.Connection, machine_id: str, lifetime: float, claims: Any, issuer_url: str
) -> CreatedToken:
    if claims is not None and not isinstance(claims, dict):
        raise invalid_param("claims", "must be a JSON object for JWT-format tokens")
    reserved = sorted(RESERVED_CLAIMS & set(claims or {}))
    if reserved:
        raise ClerkError(
            400,
            "machine_token_reserved_claim",
            "Reserved claim",
            f"The claim {reserved[0]!r} is reserved and cannot be set",
            meta={"param_name": "claims"},
        )
    key = signing_keys.active_signing_key(conn)
    scopes = machines.scoped_ids(conn, machine_id)
    token_id = ids.new_token_id()
    now = db.now_ms()
    iat = now // 1000
    # JWT times are whole seconds: round the expiry up so the token lives at least `lifetime`.
    exp = -(-(now + round(lifetime * 1000)) // 1000)
    payload = {
        **(claims or {}),
        "iss": issuer_url,
        "sub": machine_id,
        "aud": scopes,
        "scopes": " ".join(scopes),
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "jti": token_id,
    }
    secret = jwt.encode(
        payload,
        key.private_key,
        algorithm="RS256",
        headers={"kid": key.kid, "typ": "JWT", "cat": M2M_JWT_CATEGORY},
    )
    if len(secret) > MAX_TOKEN_LENGTH:  # never mint a token that verifiers refuse unread
        raise invalid_param(
            "claims" if claims else "token_format",
            f"the JWT would be {len(secret)} characters, over the {MAX_TOKEN_LENGTH} verifiers"
            f" accept ({len(scopes)} scopes, claims included): send smaller claims, or use"
            " opaque tokens",
        )
    with db.write(conn):
        conn.execute(
            "INSERT INTO jwt_issued (id, subject, kid, expiration) VALUES (?, ?, ?, ?)",
            (token_id, machine_id, key.kid, exp * 1000),
        )
        usage.record(conn, "create", "jwt", machine_id, ts=now)
    token = M2MToken(token_id, machine_id, claims, scopes, False, None, exp * 1000, None, now, now)
    return CreatedToken(token, secret)


# ---- verify ----


def looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


def verify_token(
    conn: sqlite3.Connection,
    token: str,
    *,
    issuer_url: str,
    verifier_machine_id: str | None = None,
) -> M2MToken:
    """The token's object if it is live and (for a machine verifier) the verifier is in its
    scopes; otherwise 404 `resource_not_found`. Records the verification either way."""
    if looks_like_jwt(token):
        return _verify_jwt(conn, token, issuer_url, verifier_machine_id)
    return _verify_opaque(conn, token, verifier_machine_id)


def _verify_opaque(
    conn: sqlite3.Connection, token: str, verifier_machine_id: str | None
) -> M2MToken:
    token_hash = ids.secret_hash(token)
    with db.write(conn):
        now = db.now_ms()
        rows = conn.execute(
            "UPDATE m2m_tokens SET last_used_at = :now WHERE token_hash = :hash"
            " AND revoked = 0 AND expiration > :now AND (:verifier IS NULL OR EXISTS ("
            "  SELECT 1 FROM json_each(m2m_tokens.scopes) WHERE value = :verifier))"
            " RETURNING *",
            {"now": now, "hash": token_hash, "verifier": verifier_machine_id},
        ).fetchall()
        if rows:
            usage.record(conn, "verify", "opaque", rows[0]["subject"], "ok", ts=now)
            return _row_to_token(rows[0])
        owner = conn.execute(
            "SELECT subject FROM m2m_tokens WHERE token_hash = ?", (token_hash,)
        ).fetchone()
        usage.record(conn, "verify", "opaque", owner[0] if owner else None, "failed", ts=now)
    raise not_found("token")


def _verify_jwt(
    conn: sqlite3.Connection, token: str, issuer_url: str, verifier_machine_id: str | None
) -> M2MToken:
    payload = _decode_jwt(conn, token, issuer_url)
    ok = payload is not None
    if ok and verifier_machine_id is not None:
        ok = verifier_machine_id in str(payload.get("scopes", "")).split()
    subject = payload.get("sub") if payload else None
    with db.write(conn):
        usage.record(conn, "verify", "jwt", subject, "ok" if ok else "failed")
    if not ok or payload is None:
        raise not_found("token")
    scopes = str(payload.get("scopes", "")).split()
    claims = {k: v for k, v in payload.items() if k not in RESERVED_CLAIMS} or None
    iat_ms = int(payload["iat"]) * 1000
    return M2MToken(
        id=payload["jti"],
        subject=payload["sub"],
        claims=claims,
        scopes=scopes,
        revoked=False,
        revocation_reason=None,
        expiration=int(payload["exp"]) * 1000,
        last_used_at=None,
        created_at=iat_ms,
        updated_at=iat_ms,
    )


def _decode_jwt(conn: sqlite3.Connection, token: str, issuer_url: str) -> dict[str, Any] | None:
    """The claims of a JWT-format M2M token we signed, or None if it is not valid now."""
    try:
        header = jwt.get_unverified_header(token)
        key = signing_keys.public_key(conn, header.get("kid"))
        if key is None or header.get("cat") != M2M_JWT_CATEGORY:
            return None
        payload = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            issuer=issuer_url,
            options={
                "require": ["iss", "sub", "exp", "iat", "jti"],
                "verify_aud": False,  # the scope check below is the audience check
            },
        )
    except jwt.PyJWTError:
        return None
    if not ids.is_machine_id(payload.get("sub")) or not ids.is_token_id(payload.get("jti")):
        return None
    return payload


# ---- list, get, revoke ----


def list_tokens(
    conn: sqlite3.Connection,
    subject: str,
    *,
    include_revoked: bool = False,
    include_expired: bool = False,
    limit: int = 10,
    offset: int = 0,
) -> tuple[list[M2MToken], int]:
    """A page of the subject's opaque tokens, newest first, and the total count."""
    where, params = "subject = ?", [subject]
    if not include_revoked:
        where += " AND revoked = 0"
    if not include_expired:
        where += " AND expiration > ?"
        params.append(db.now_ms())
    total = conn.execute(
        f"SELECT COUNT(*) FROM m2m_tokens WHERE {where}",  # noqa: S608
        params,
    ).fetchone()[0]
    # `+expiration`: the page walks the subject's newest tokens (index m2m_tokens_*_newest) and
    # skips the few expired ones, instead of sorting every live token of the subject.
    rows = conn.execute(
        f"SELECT * FROM m2m_tokens WHERE {where.replace('expiration', '+expiration')}"  # noqa: S608
        " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [_row_to_token(r) for r in rows], total


def get_token(conn: sqlite3.Connection, token_id: str) -> M2MToken:
    """An opaque token by id (404 if unknown)."""
    if not ids.is_token_id(token_id):
        raise not_found("token")
    row = conn.execute("SELECT * FROM m2m_tokens WHERE id = ?", (token_id,)).fetchone()
    if row is None:
        raise not_found("token")
    return _row_to_token(row)


def revoke_token(
    conn: sqlite3.Connection,
    token_id: str,
    *,
    revocation_reason: str | None = None,
    owner_machine_id: str | None = None,
) -> M2MToken:
    """Revoke an opaque token (a machine may revoke only its own); JWTs cannot be revoked."""
    if not ids.is_token_id(token_id):
        raise not_found("token")
    with db.write(conn):
        row = conn.execute("SELECT subject, revoked FROM m2m_tokens WHERE id = ?", (token_id,))
        row = row.fetchone()
        if row is None:
            # A JWT that has expired is past revoking or using: like an unknown token (404),
            # whether or not retention has deleted its row yet.
            issued = conn.execute(
                "SELECT subject FROM jwt_issued WHERE id = ? AND expiration > ?",
                (token_id, db.now_ms()),
            ).fetchone()
            if issued is not None and owner_machine_id in (None, issued[0]):
                raise ClerkError(
                    400,
                    "jwt_token_not_revocable",
                    "JWT tokens cannot be revoked",
                    "This is a JWT-format token: it stays valid until it expires."
                    " Use opaque tokens where instant revocation matters.",
                )
            raise not_found("token")
        if owner_machine_id is not None and row["subject"] != owner_machine_id:
            raise not_found("token")
        if not row["revoked"]:
            conn.execute(
                "UPDATE m2m_tokens SET revoked = 1, revocation_reason = ?, updated_at = ?"
                " WHERE id = ?",
                (revocation_reason, db.now_ms(), token_id),
            )
    return get_token(conn, token_id)


def json_depth(value: Any) -> int:
    """How many containers deep a JSON value nests (a scalar is 0, `{"a": [1]}` is 2), found
    without recursion so no depth can overflow the stack here."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest
