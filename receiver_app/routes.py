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
    body = _json_body()
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(message, str | None):
        return jsonify(
            error="invalid_request", error_description='send {"message": "<text>"} as JSON'
        ), 400
    token = current_token()
    return jsonify(messageReceived=message, **{"from": token.machine_id}, token=token.as_json())


def _json_body() -> object:
    """The JSON body; {} when there is no body (no message); None when it cannot be used:
    broken JSON, JSON nested too deeply to parse, or a body the server could not read
    (gunicorn: broken chunked encoding). Broken JSON is not "no body"."""
    try:
        return request.get_json(silent=True) if request.get_data(cache=True) else {}
    except HTTPException:
        raise  # e.g. 413 for a body over MAX_CONTENT_LENGTH
    except Exception:  # RecursionError from the parser, or the server's own read error
        return None


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness only: answers without touching the issuer."""
    return jsonify(status="ok")


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> ResponseReturnValue:
    """Every HTTP error of the app (404, 405, 413, and 500 for an unhandled exception, which
    Flask has already logged) as a small JSON body: never Flask's HTML page or a traceback."""
    response = exc.get_response()  # keeps headers such as Allow on a 405
    response.data = jsonify(
        error=(exc.name or "error").lower().replace(" ", "_"), error_description=exc.name
    ).get_data()
    response.content_type = "application/json"
    return response
