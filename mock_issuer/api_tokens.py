"""M2M token routes, served both at `/m2m_tokens...` (Node SDK) and `/v1/m2m_tokens...`
(Python SDK): the blueprint is registered twice."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from . import ids, machines, tokens
from .auth import authenticate, require_machine
from .config import current_settings
from .db import get_conn
from .errors import invalid_param, machine_not_found, missing_param, not_found
from .requests_util import (
    as_int,
    as_number,
    as_str,
    json_body,
    query_bool,
    query_int,
)

bp = Blueprint("m2m_tokens", __name__)

CREATE_FIELDS = {"token_format", "seconds_until_expiration", "claims", "min_remaining_ttl_seconds"}


@bp.post("/m2m_tokens")
def create_token() -> Any:
    caller = require_machine()
    data = json_body(CREATE_FIELDS, required=False)
    token_format = "opaque" if data.get("token_format") is None else data["token_format"]
    if token_format not in ("opaque", "jwt"):
        raise invalid_param("token_format", "must be 'opaque' or 'jwt'")
    seconds = data.get("seconds_until_expiration")
    if seconds is not None:
        seconds = as_number(
            "seconds_until_expiration", seconds, tokens.MIN_LIFETIME_SECONDS, machines.MAX_TOKEN_TTL
        )
    min_remaining = data.get("min_remaining_ttl_seconds")
    if min_remaining is not None:
        min_remaining = as_int(
            "min_remaining_ttl_seconds", min_remaining, 0, machines.MAX_TOKEN_TTL
        )
    assert caller.machine_id is not None
    conn = get_conn()
    settings = current_settings()
    created = tokens.create_token(
        conn,
        caller.machine_id,
        caller.key,
        issuer_url=settings.mock_issuer_url,
        instance_secret_key=settings.clerk_secret_key,
        fmt=token_format,
        seconds_until_expiration=seconds,
        claims=data.get("claims"),
        min_remaining_ttl_seconds=min_remaining,
    )
    return jsonify(created.token.to_dict(token=created.secret)), 201


@bp.get("/m2m_tokens")
def list_tokens() -> Any:
    caller = authenticate()
    subject = request.args.get("subject")
    if not subject:
        raise missing_param("subject")
    if not ids.is_machine_id(subject):
        raise invalid_param("subject", "must be a machine id (mch_ + 27 characters)")
    limit = query_int("limit", 10, 1, 100)
    offset = query_int("offset", 0, 0, 10**9)
    include_revoked = query_bool("revoked", False)
    include_expired = query_bool("expired", False)
    conn = get_conn()
    if caller.machine_id is not None and caller.machine_id != subject:
        raise not_found("subject machine")
    if not machines.machine_exists(conn, subject):
        raise machine_not_found(subject)
    page, total = tokens.list_tokens(
        conn,
        subject,
        include_revoked=include_revoked,
        include_expired=include_expired,
        limit=limit,
        offset=offset,
    )
    return jsonify({"m2m_tokens": [t.to_dict() for t in page], "total_count": total})


@bp.post("/m2m_tokens/<token_id>/revoke")
def revoke_token(token_id: str) -> Any:
    caller = authenticate()
    data = json_body({"revocation_reason"}, required=False)
    reason = data.get("revocation_reason")
    if reason is not None:
        reason = as_str("revocation_reason", reason, max_len=1000, min_len=0)
    token = tokens.revoke_token(
        get_conn(), token_id, revocation_reason=reason, owner_machine_id=caller.machine_id
    )
    return jsonify(token.to_dict())


@bp.post("/m2m_tokens/verify")
def verify_token() -> Any:
    caller = authenticate()
    data = json_body({"token", "secret"})
    if "token" in data and "secret" in data:
        raise invalid_param("token", "send either token or secret, not both", status=400)
    name = "token" if "token" in data else "secret"
    if data.get(name) is None:
        raise missing_param("token")
    token = as_str(name, data[name], max_len=tokens.MAX_TOKEN_LENGTH)
    result = tokens.verify_token(
        get_conn(),
        token,
        issuer_url=current_settings().mock_issuer_url,
        verifier_machine_id=caller.machine_id,
    )
    return jsonify(result.to_dict())
