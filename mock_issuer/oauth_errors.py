"""OAuth 2.0 error answers (RFC 6749 §5.2) for the `/oauth/...` routes, including the answers
the rest of the issuer would give in Clerk's envelope there (fault injection, 413, crashes).

`{"error": "<code>", "error_description": "<text>"}` with `Cache-Control: no-store` and
`Pragma: no-cache`. Descriptions are ASCII text that never repeats a secret or a token.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response
from werkzeug.exceptions import HTTPException

from .errors import ClerkError

log = logging.getLogger("mock_issuer")

REALM = "mock_issuer"
BASIC_CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'


class OAuthError(Exception):
    """An error answer in RFC 6749 §5.2 form; raise it anywhere in an OAuth request."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}


def invalid_request(description: str, status: int = 400) -> OAuthError:
    return OAuthError("invalid_request", description, status)


def invalid_client(description: str) -> OAuthError:
    """401 with a Basic challenge: RFC 6749 §5.2 requires it when the client used Basic, and
    HTTP requires a challenge on every 401, so it names the scheme we accept there."""
    return OAuthError("invalid_client", description, 401, {"WWW-Authenticate": BASIC_CHALLENGE})


def no_store(resp: Response) -> Response:
    """Token and error answers must never be cached (RFC 6749 §5.1)."""
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def json_answer(body: dict, status: int = 200) -> Response:
    """A JSON answer with `Content-Type: application/json` and the no-store headers."""
    resp = Response(json.dumps(body, separators=(",", ":")), status=status)
    resp.headers["Content-Type"] = "application/json"
    return no_store(resp)


def error_response(err: OAuthError) -> Response:
    resp = json_answer({"error": err.error, "error_description": err.description}, err.status)
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp


def _from_status(status: int, description: str, headers: dict[str, str]) -> OAuthError:
    """An OAuth error for an answer the issuer gives outside the OAuth code (a faulted request,
    an emulated rate limit, an oversize body): the status and Retry-After stay as they are."""
    if status in (429, 503):
        code = "temporarily_unavailable"
    elif status >= 500:
        code = "server_error"
    else:
        code = "invalid_request"
    return OAuthError(code, description, status, headers)


def register_error_handlers(bp: Blueprint) -> None:
    """Answer every error of the blueprint's routes as an OAuth error, whatever raised it."""

    @bp.errorhandler(OAuthError)
    def _oauth_error(err: OAuthError) -> Response:
        return error_response(err)

    @bp.errorhandler(ClerkError)
    def _clerk_error(err: ClerkError) -> Response:
        return error_response(_from_status(err.status, err.long_message, err.headers))

    @bp.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        return error_response(_from_status(status, err.name, {}))

    @bp.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unexpected error while handling an OAuth request")
        return error_response(OAuthError("server_error", "an unexpected error occurred", 500))
