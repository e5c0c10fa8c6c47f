"""Clerk's error envelope for every error answer, including Flask's own 404/405/413 and crashes.

`{"errors":[{"message","long_message","code","meta"?}],"clerk_trace_id":"..."}` with
`Content-Type: application/json` exactly (the Node SDK compares it literally).
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger("mock_issuer")


class ClerkError(Exception):
    """An error answer in Clerk's format; raise it anywhere in a request."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        long_message: str | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.long_message = long_message or message
        self.meta = meta
        self.headers = headers or {}


def error_response(err: ClerkError) -> Response:
    entry: dict[str, Any] = {
        "message": err.message,
        "long_message": err.long_message,
        "code": err.code,
    }
    if err.meta:
        entry["meta"] = err.meta
    body = {"errors": [entry], "clerk_trace_id": secrets.token_hex(16)}
    resp = Response(
        json.dumps(body, separators=(",", ":")), status=err.status, mimetype="application/json"
    )
    resp.headers["Content-Type"] = "application/json"
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp


# ---- constructors for the errors the API answers most ----


def invalid_param(name: str, reason: str, status: int = 422) -> ClerkError:
    """A parameter with a value of the wrong type or range."""
    return ClerkError(
        status,
        "form_param_value_invalid",
        f"{name} is invalid",
        f"{name} is invalid: {reason}",
        meta={"param_name": name},
    )


def missing_param(name: str) -> ClerkError:
    return ClerkError(
        422,
        "form_param_missing",
        f"{name} must be included",
        f"{name} is required but was not included",
        meta={"param_name": name},
    )


def body_invalid(reason: str, param: str | None = None) -> ClerkError:
    return ClerkError(
        400,
        "request_body_invalid",
        "Request body invalid",
        f"The request body is invalid: {reason}",
        meta={"param_name": param} if param else None,
    )


def not_found(what: str = "resource") -> ClerkError:
    return ClerkError(404, "resource_not_found", "not found", f"The {what} was not found")


def machine_not_found(machine_id: str | None = None) -> ClerkError:
    detail = f"No machine with id {machine_id!r} exists" if machine_id else "Machine not found"
    return ClerkError(404, "machine_not_found", "Machine not found", detail)


_HTTP_CODES = {
    400: "request_invalid",
    404: "resource_not_found",
    405: "method_not_allowed",
    413: "request_body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def register_error_handlers(app: Flask) -> None:
    """Route every error, ours and Flask's, through the envelope; 500s carry no details."""

    @app.errorhandler(ClerkError)
    def _clerk_error(err: ClerkError) -> Response:
        return error_response(err)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        code = _HTTP_CODES.get(status, "request_invalid" if status < 500 else "internal_error")
        message = err.name
        long_message = err.description or err.name
        if status == 413:
            long_message = (
                f"The request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
            )
        clerk_err = ClerkError(status, code, message, long_message)
        resp = error_response(clerk_err)
        if status == 405 and getattr(err, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(err.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unexpected error while handling a request")
        return error_response(
            ClerkError(500, "internal_clerk_error", "Oops, an unexpected error occurred")
        )
