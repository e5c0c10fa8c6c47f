"""`POST /v1/_sign` (ours, test-only, sk): sign any claims with the active signing key.

Rejection tests need JWTs the issuer never mints (expired, not yet valid, from another `iss`)
signed by the key a receiver trusts, or the test proves only the signature check. The header
is that of real M2M JWTs (RS256, the active `kid`, `typ`, `cat`); the payload is exactly the
claims sent: nothing is added, stored or counted as usage, so such a token keeps its key in the
JWKS only until the next rotation. Claims whose token would be longer than verifiers read
(MAX_TOKEN_LENGTH) are refused as on `POST /m2m_tokens`. Off Clerk's surface (fault rules
never apply to it) and guarded by the instance secret key, which can already mint and revoke
every machine's tokens.
"""

from __future__ import annotations

from typing import Any

import jwt
from flask import Blueprint, jsonify

from . import signing_keys
from .auth import require_instance
from .db import get_conn
from .errors import invalid_param
from .requests_util import json_body, require
from .tokens import M2M_JWT_CATEGORY, MAX_TOKEN_LENGTH

bp = Blueprint("test_signing", __name__)


@bp.post("/v1/_sign")
def sign() -> Any:
    """Answer `{"object": "signed_jwt", "kid", "token"}` for the body's `claims` object."""
    require_instance()
    claims = require(json_body({"claims"}), "claims")
    if not isinstance(claims, dict):
        raise invalid_param("claims", "must be a JSON object")
    key = signing_keys.active_signing_key(get_conn())
    token = jwt.encode(
        claims,
        key.private_key,
        algorithm="RS256",
        headers={"kid": key.kid, "typ": "JWT", "cat": M2M_JWT_CATEGORY},
    )
    if len(token) > MAX_TOKEN_LENGTH:  # as POST /m2m_tokens: verifiers would refuse it unread
        raise invalid_param(
            "claims",
            f"the JWT would be {len(token)} characters, over the {MAX_TOKEN_LENGTH} verifiers"
            " accept: send smaller claims",
        )
    return jsonify({"object": "signed_jwt", "kid": key.kid, "token": token})
