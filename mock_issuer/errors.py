"""Clerk's error envelope for every error answer, including Flask's own 404/405/413 and crashes.

`{"errors":[{"message","long_message","code","meta"?}],"clerk_trace_id":"..."}` with
`Content-Type: application/json` exactly (the Node SDK compares it literally).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
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


ErrorPage = Callable[[int, str, str], Response]  # (status, title, description) -> a page


def register_error_handlers(app: Flask, *, html_prefix: str, html_page: ErrorPage) -> None:
    """One handler for every error, ours, Flask's (404, 405, 413...) and crashes: an HTML page
    from `html_page` for paths under `html_prefix` (the dashboard), Clerk's envelope for every
    other path. A crash is logged; its answer carries no details."""

    @app.errorhandler(Exception)
    def _any_error(err: Exception) -> Response:
        clerk_err = _as_clerk_error(err, app.config["MAX_CONTENT_LENGTH"])
        path = request.path
        if path == html_prefix or path.startswith(f"{html_prefix}/"):
            resp = html_page(clerk_err.status, clerk_err.message, clerk_err.long_message)
        else:
            resp = error_response(clerk_err)
        resp.headers.update(clerk_err.headers)
        return resp


def _as_clerk_error(err: Exception, max_body_bytes: int) -> ClerkError:
    """Any exception as the ClerkError to answer with (Flask's with their status and Allow)."""
    if isinstance(err, ClerkError):
        return err
    if not isinstance(err, HTTPException):
        log.exception("unexpected error while handling a request")
        return ClerkError(500, "internal_clerk_error", "Oops, an unexpected error occurred")
    status = err.code or 500
    code = _HTTP_CODES.get(status, "request_invalid" if status < 500 else "internal_error")
    long_message = err.description or err.name
    if status == 413:
        long_message = f"The request body is larger than {max_body_bytes} bytes"
    headers = {}
    if status == 405 and getattr(err, "valid_methods", None):
        headers["Allow"] = ", ".join(err.valid_methods)
    return ClerkError(status, code, err.name, long_message, headers=headers)
