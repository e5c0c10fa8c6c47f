"""The receiver's HTTP routes: one protected endpoint, like Clerk's example, and a health check."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from .auth import current_token, require_m2m

bp = Blueprint("receiver", __name__)


@bp.post("/receive")
@require_m2m
def receive() -> ResponseReturnValue:
    """Accept a message from another machine and say who sent it with which token."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested too deeply to parse: as unusable as malformed JSON
        body = None
    except HTTPException:
        raise
    except Exception:  # the server could not read the body (gunicorn: broken chunked encoding)
        return jsonify(
            error="invalid_request", error_description="the request body could not be read"
        ), 400
    if body is None:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(message, str | None):
        return jsonify(
            error="invalid_request", error_description='send {"message": "<text>"} as JSON'
        ), 400
    token = current_token()
    return jsonify(messageReceived=message, **{"from": token.machine_id}, token=token.as_json())


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness only: answers without touching the issuer."""
    return jsonify(status="ok")
