"""`require_m2m`: protect a Flask view with an M2M bearer token, answering as RFC 6750 says."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from flask import current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from .verifier import (
    CallerNotAllowedError,
    IssuerUnavailableError,
    M2MVerifier,
    VerificationError,
    VerifiedToken,
)

log = logging.getLogger(__name__)

EXTENSION_KEY = "m2m_verifier"  # where create_app puts the M2MVerifier (app.extensions)
REALM = "receiver"  # the realm of every WWW-Authenticate challenge
# RFC 6750 section 2.1: credentials = "Bearer" 1*SP b64token
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

View = TypeVar("View", bound=Callable[..., ResponseReturnValue])


class BadRequestError(VerificationError):
    """The Authorization header is malformed: 400 invalid_request."""

    status = 400
    error = "invalid_request"


class MissingTokenError(VerificationError):
    """No bearer credentials at all: 401 with no error code (RFC 6750 section 3.1)."""

    error = ""


def current_token() -> VerifiedToken:
    """The token that `require_m2m` verified for this request."""
    return g.m2m_token


@overload
def require_m2m(view: View) -> View: ...
@overload
def require_m2m(*, allowed_callers: Iterable[str] | None = None) -> Callable[[View], View]: ...


def require_m2m(view=None, *, allowed_callers=None):
    """Decorate a view so it runs only for a verified M2M token, found on `g.m2m_token`.

    Use it bare (`@require_m2m`) or with options (`@require_m2m(allowed_callers={"mch_..."})`);
    `allowed_callers` narrows this view further than the app-wide M2M_ALLOWED_CALLERS.
    """
    allowed = frozenset(allowed_callers) if allowed_callers is not None else None

    def decorate(fn: View) -> View:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            try:
                token = _verify_request(allowed)
            except VerificationError as exc:
                return error_response(exc)
            g.m2m_token = token
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(view) if view is not None else decorate


def _verify_request(allowed: frozenset[str] | None) -> VerifiedToken:
    verifier: M2MVerifier = current_app.extensions[EXTENSION_KEY]
    token = bearer_token()
    try:
        verified = verifier.verify(token)
    except VerificationError as exc:
        if not isinstance(exc, IssuerUnavailableError):
            log.info("M2M token rejected: %s", exc.description)
        raise
    if allowed is not None and verified.machine_id not in allowed:
        log.info("M2M token %s rejected: caller not allowed on this route", verified.id)
        raise CallerNotAllowedError("calling machine is not allowed here")
    return verified


def bearer_token() -> str:
    """The bearer token of this request, or MissingTokenError / BadRequestError.

    Only the Authorization header is supported (RFC 6750 section 2.1). A token sent only as an
    `access_token` query or form parameter counts as no credentials (401, no error code: section
    3.1, "an unsupported authentication method"); one sent there *and* in the header is 400
    invalid_request (section 2: "MUST NOT use more than one method").
    """
    value = request.headers.get("Authorization")
    if value is None:
        raise MissingTokenError("a bearer token is required")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer":
        raise MissingTokenError("a bearer token is required")  # another scheme: not ours
    if _token_outside_the_header():
        raise BadRequestError("send the token in one place only")
    token = credentials.lstrip(" ")
    # Repeated Authorization headers reach WSGI joined by commas: the pattern rejects them.
    if not _B64TOKEN.fullmatch(token):
        raise BadRequestError("the Authorization header is malformed")
    return token


def _token_outside_the_header() -> bool:
    """Whether the request also carries `access_token` in its query or form-encoded body."""
    if "access_token" in request.args:
        return True
    if request.mimetype != "application/x-www-form-urlencoded":
        return False
    request.get_data(cache=True)  # keep the raw body readable for the view after form parsing
    return "access_token" in request.form


def error_response(exc: VerificationError) -> ResponseReturnValue:
    """The RFC 6750 answer for a rejected request: status, WWW-Authenticate and a JSON body."""
    body = {"error": exc.error or None, "error_description": exc.description}
    headers: dict[str, str] = {}
    if isinstance(exc, IssuerUnavailableError):
        headers["Retry-After"] = str(exc.retry_after)
    else:
        headers["WWW-Authenticate"] = _challenge(exc)
    return jsonify(body), exc.status, headers


def _challenge(exc: VerificationError) -> str:
    if not exc.error:
        return f'Bearer realm="{REALM}"'
    return f'Bearer realm="{REALM}", error="{exc.error}", error_description="{exc.description}"'
