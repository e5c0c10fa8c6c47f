"""JSON error answers: every failure of the caller, unknown routes and bugs included, is a
small JSON body saying what failed, never Flask's HTML page or a traceback."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


def json_error(
    status: int, code: str, message: str, *, dependency: str | None, **extra
) -> Response:
    """A JSON error body: a stable `error` code, a message, and the `dependency` that failed
    (`"issuer"`, `"receiver"`, or None when the request itself is at fault)."""
    if status >= 500:
        log.warning("%s: %s", code, message)
    response = jsonify({"error": code, "message": message, "dependency": dependency, **extra})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _internal_error)


def _http_error(exc: HTTPException) -> Response:
    """404, 405...: Werkzeug's status and description as JSON, keeping headers such as Allow."""
    code = (exc.name or "error").lower().replace(" ", "_")  # "Not Found" -> "not_found"
    response = json_error(exc.code or 500, code, exc.description or code, dependency=None)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _internal_error(exc: InternalServerError) -> Response:
    """A bug: Flask has logged the exception; the client learns nothing of its details."""
    return json_error(500, "internal_error", "the caller failed unexpectedly", dependency=None)
