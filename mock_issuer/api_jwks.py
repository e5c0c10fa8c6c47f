"""Signing keys: `GET /v1/jwks` (sk, Clerk's route), `GET /.well-known/jwks.json` (public,
ours: public keys need no secret) and `POST /v1/jwks/rotate` (sk, ours)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from . import signing_keys
from .auth import require_instance
from .db import get_conn
from .requests_util import json_body

bp = Blueprint("jwks", __name__)


@bp.get("/v1/jwks")
def get_jwks() -> Any:
    require_instance()
    return jsonify(signing_keys.jwks(get_conn()))


@bp.get("/.well-known/jwks.json")
def public_jwks() -> Any:
    resp = jsonify(signing_keys.jwks(get_conn()))
    resp.headers["Cache-Control"] = "public, max-age=60"
    return resp


@bp.post("/v1/jwks/rotate")
def rotate() -> Any:
    require_instance()
    json_body(set(), required=False)
    conn = get_conn()
    new_kid, old_kid = signing_keys.rotate_signing_key(conn)
    return jsonify(
        {
            "object": "signing_key_rotation",
            "active_kid": new_kid,
            "retired_kid": old_kid,
            **signing_keys.jwks(conn),
        }
    )
