"""OAuth 2.0 access tokens for machines: issue (client credentials), introspect, revoke.

The client is a machine; the targets (audiences) are machines it is scoped to. Two formats:
- `jwt`: RFC 9068 JWT access tokens (header `typ: at+jwt`), signed with the issuer's active
  signing key and recorded in `jwt_issued` like the M2M JWTs, so their key stays published
  while they live. Revoking one puts its `jti` on a small deny list (checked by introspection).
- `opaque`: rows of the M2M token table (`mt_` + 256 random bits, stored as a SHA-256), with
  the audience as their scopes, so the M2M verify route, listing, revocation, the dashboard
  and retention treat them like any M2M opaque token. Their claims hold `{"scope": ...}`.
Creations and verifications (introspections) are usage records like the M2M ones, so the
usage API, the dashboard, the cost estimate and `/metrics` count them.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

import jwt

from . import db, ids, machines, signing_keys, tokens, usage
from .errors import ClerkError
from .oauth_errors import OAuthError, invalid_request

TOKEN_FORMATS = ("jwt", "opaque")
DEFAULT_TOKEN_FORMAT = "jwt"  # noqa: S105 (a format name)
JWT_TYPE = "at+jwt"
ALGORITHM = "RS256"
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
INACTIVE: dict[str, Any] = {"active": False}

SCHEMA = """
CREATE TABLE IF NOT EXISTS oauth_revoked_jwts (
    jti TEXT PRIMARY KEY,
    expiration INTEGER NOT NULL
) WITHOUT ROWID
"""


def init_storage(conn: sqlite3.Connection) -> None:
    """The deny list of revoked JWT access tokens (race-safe: every worker runs it)."""
    with db.write(conn):
        conn.execute(SCHEMA)


@dataclass(frozen=True)
class Grant:
    """What a token is for: its audience (machine ids) and its scope (machine ids)."""

    audience: tuple[str, ...]
    scope: tuple[str, ...]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


def _safe_id(value: str) -> str:
    """The value for an error description if it is a well-formed machine id, else a stand-in
    (error descriptions never repeat arbitrary input)."""
    return value if ids.is_machine_id(value) else "(not a machine id)"


def resolve_grant(
    allowed: list[str], resources: list[str], scope: list[str] | None, client_id: str
) -> Grant:
    """The audience and scope of a token for a client that may call `allowed`.

    The audience is the requested resources (`resource`, `audience`) if any, else the `scope`
    values, else every machine the client may call. `scope` (machine ids) must be within the
    allowed machines, and within the resources when both are sent."""
    if not allowed:
        raise OAuthError(
            "unauthorized_client",
            f"{client_id} is scoped to no machine, so it may not obtain tokens",
        )
    for resource in resources:
        if resource not in allowed:
            raise OAuthError(
                "invalid_target", f"{_safe_id(resource)} is not a machine this client may call"
            )
    for value in scope or ():
        if value not in allowed:
            raise OAuthError(
                "invalid_scope", f"{_safe_id(value)} is not a machine this client may call"
            )
        if resources and value not in resources:
            raise OAuthError(
                "invalid_scope", f"{_safe_id(value)} is in scope but not among the resources"
            )
    audience = tuple(dict.fromkeys(resources or scope or allowed))
    return Grant(audience, tuple(dict.fromkeys(scope)) if scope else audience)


def issue(
    conn: sqlite3.Connection,
    client_id: str,
    *,
    resources: list[str],
    scope: list[str] | None,
    token_format: str,
    issuer_url: str,
) -> IssuedToken:
    """An access token for `client_id`, living its machine's default token lifetime."""
    machine = machines.get_machine(conn, client_id)
    grant = resolve_grant(machines.scoped_ids(conn, client_id), resources, scope, client_id)
    lifetime = machine.default_token_ttl
    if token_format == "jwt":  # noqa: S105 (a format name)
        secret = _issue_jwt(conn, client_id, grant, lifetime, issuer_url)
    else:
        secret = _issue_opaque(conn, client_id, grant, lifetime)
    return IssuedToken(secret, lifetime, " ".join(grant.scope))


def _issue_jwt(
    conn: sqlite3.Connection, client_id: str, grant: Grant, lifetime: int, issuer_url: str
) -> str:
    key = signing_keys.active_signing_key(conn)
    jti = ids.new_token_id()
    now = db.now_ms()
    iat = now // 1000
    payload = {
        "iss": issuer_url,
        "sub": client_id,
        "aud": grant.audience[0] if len(grant.audience) == 1 else list(grant.audience),
        "exp": iat + lifetime,
        "iat": iat,
        "nbf": iat,
        "jti": jti,
        "client_id": client_id,
        "scope": " ".join(grant.scope),
    }
    token = jwt.encode(
        payload, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": JWT_TYPE}
    )
    if len(token) > tokens.MAX_TOKEN_LENGTH:  # never mint a token verifiers refuse unread
        raise invalid_request(
            f"the JWT would be {len(token)} characters, over the {tokens.MAX_TOKEN_LENGTH}"
            " verifiers accept: name fewer targets, or ask for token_format=opaque"
        )
    with db.write(conn):
        conn.execute(
            "INSERT INTO jwt_issued (id, subject, kid, expiration) VALUES (?, ?, ?, ?)",
            (jti, client_id, key.kid, (iat + lifetime) * 1000),
        )
        usage.record(conn, "create", "jwt", client_id, ts=now)
    return token


def _json(value: Any) -> str:
    """Compact JSON, as the M2M token table stores claims and scopes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _issue_opaque(conn: sqlite3.Connection, client_id: str, grant: Grant, lifetime: int) -> str:
    token_id, secret = ids.new_token_id(), ids.new_token_secret()
    claims = _json({"scope": " ".join(grant.scope)})
    with db.write(conn):
        now = db.now_ms()
        conn.execute(
            "INSERT INTO m2m_tokens (id, token_hash, subject, claims, scopes, expiration,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token_id,
                ids.secret_hash(secret),
                client_id,
                claims,
                _json(list(grant.audience)),
                now + lifetime * 1000,
                now,
                now,
            ),
        )
        usage.record(conn, "create", "opaque", client_id, ts=now)
    return secret


# ---- reading JWT access tokens ----


def decode_access_token(
    conn: sqlite3.Connection, token: str, issuer_url: str
) -> dict[str, Any] | None:
    """The claims of a JWT access token this issuer signed and that has not expired (on the
    issuer's clock), audience not checked; None otherwise."""
    try:
        header = jwt.get_unverified_header(token)
        if str(header.get("typ", "")).lower() not in (JWT_TYPE, "application/" + JWT_TYPE):
            return None
        key = signing_keys.public_key(conn, header.get("kid"))
        if key is None:
            return None
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer_url,
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_aud": False,
                # Times are checked below on the issuer's clock, as for opaque tokens.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError:
        return None
    now_s = db.now_ms() / 1000
    exp, nbf = payload["exp"], payload.get("nbf", payload["iat"])
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in (exp, nbf)):
        return None
    if exp <= now_s or nbf > now_s:
        return None
    if not ids.is_machine_id(payload["sub"]) or not ids.is_token_id(payload["jti"]):
        return None
    return payload


def _audience(payload: dict[str, Any]) -> list[str]:
    aud = payload.get("aud")
    return [aud] if isinstance(aud, str) else [a for a in aud or () if isinstance(a, str)]


def _is_revoked_jwt(conn: sqlite3.Connection, jti: str) -> bool:
    row = conn.execute("SELECT 1 FROM oauth_revoked_jwts WHERE jti = ?", (jti,)).fetchone()
    return row is not None


# ---- introspection (RFC 7662) ----


def introspect(
    conn: sqlite3.Connection, token: str, *, resource_id: str, issuer_url: str
) -> dict[str, Any]:
    """What the resource `resource_id` may know about `token`: the standard fields if it is
    live and meant for that resource, else only `active: false`. Counted as a verification."""
    if len(token) > tokens.MAX_TOKEN_LENGTH:
        return INACTIVE
    if tokens.looks_like_jwt(token):
        return _introspect_jwt(conn, token, resource_id, issuer_url)
    try:
        found = tokens.verify_token(
            conn, token, issuer_url=issuer_url, verifier_machine_id=resource_id
        )
    except ClerkError:
        return INACTIVE
    claims = found.claims if isinstance(found.claims, dict) else {}
    scope = claims.get("scope")
    return {
        "active": True,
        "scope": scope if isinstance(scope, str) else " ".join(found.scopes),
        "client_id": found.subject,
        "token_type": "Bearer",
        "exp": found.expiration // 1000,
        "iat": found.created_at // 1000,
        "nbf": found.created_at // 1000,
        "sub": found.subject,
        "aud": found.scopes,
        "iss": issuer_url,
        "jti": found.id,
    }


def _introspect_jwt(
    conn: sqlite3.Connection, token: str, resource_id: str, issuer_url: str
) -> dict[str, Any]:
    payload = decode_access_token(conn, token, issuer_url)
    active = (
        payload is not None
        and resource_id in _audience(payload)
        and not _is_revoked_jwt(conn, payload["jti"])
        and machines.machine_exists(conn, payload["sub"])  # a deleted machine's tokens end
    )
    with db.write(conn):
        usage.record(
            conn, "verify", "jwt", payload["sub"] if payload else None, "ok" if active else "failed"
        )
    if not active or payload is None:
        return INACTIVE
    return {
        "active": True,
        "scope": str(payload.get("scope", "")),
        "client_id": payload["client_id"],
        "token_type": "Bearer",
        "exp": payload["exp"],
        "iat": payload["iat"],
        "nbf": payload.get("nbf", payload["iat"]),
        "sub": payload["sub"],
        "aud": _audience(payload),
        "iss": payload["iss"],
        "jti": payload["jti"],
    }


# ---- revocation (RFC 7009) ----


def _not_yours() -> OAuthError:
    return OAuthError("unauthorized_client", "the token was not issued to this client")


def revoke(conn: sqlite3.Connection, token: str, *, client_id: str, issuer_url: str) -> None:
    """Revoke `client_id`'s own token. Unknown, expired and already revoked tokens need nothing
    done (RFC 7009 §2.2: the answer is 200 all the same); another client's token is refused
    with `unauthorized_client` (§2.1)."""
    if len(token) > tokens.MAX_TOKEN_LENGTH:
        return
    if tokens.looks_like_jwt(token):
        payload = decode_access_token(conn, token, issuer_url)
        if payload is None:
            return
        if payload["sub"] != client_id:
            raise _not_yours()
        with db.write(conn):
            conn.execute("DELETE FROM oauth_revoked_jwts WHERE expiration <= ?", (db.now_ms(),))
            conn.execute(
                "INSERT OR IGNORE INTO oauth_revoked_jwts (jti, expiration) VALUES (?, ?)",
                (payload["jti"], payload["exp"] * 1000),
            )
        return
    row = conn.execute(
        "SELECT id, subject FROM m2m_tokens WHERE token_hash = ?", (ids.secret_hash(token),)
    ).fetchone()
    if row is None:
        return
    if row["subject"] != client_id:
        raise _not_yours()
    tokens.revoke_token(
        conn,
        row["id"],
        revocation_reason="revoked at the OAuth revocation endpoint",
        owner_machine_id=client_id,
    )
