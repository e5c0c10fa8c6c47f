"""Dashboard sign-in: the instance secret key once, then Flask's signed session cookie; CSRF tokens.

The cookie-signing key is derived from the instance secret key (or set explicitly), so every
gunicorn worker and every restart accepts the same cookies, and changing the instance secret key
signs everybody out.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import secrets
import time
from urllib.parse import unquote, urlsplit

from flask import abort, request, session

SESSION_LABEL = b"mock-issuer dashboard session cookie v1"
SESSION_MAX_AGE_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
DASHBOARD = "/dashboard"


def session_secret(instance_secret_key: str, override: str | None = None) -> str:
    """The key Flask signs session cookies with: the override if set, else HMAC(sk, label)."""
    if override:
        return override
    return hmac.new(instance_secret_key.encode(), SESSION_LABEL, hashlib.sha256).hexdigest()


def secret_key_matches(submitted: str, instance_secret_key: str) -> bool:
    """Constant-time comparison of what was typed with the instance secret key."""
    return hmac.compare_digest(submitted.strip().encode(), instance_secret_key.encode())


def sign_in() -> None:
    """Start a fresh signed-in session (a new CSRF token too, so a pre-login one is useless)."""
    session.clear()
    session["signed_in_at"] = int(time.time())
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def sign_out() -> None:
    session.clear()


def is_signed_in() -> bool:
    signed_in_at = session.get("signed_in_at")
    if not isinstance(signed_in_at, int):
        return False
    return 0 <= time.time() - signed_in_at < SESSION_MAX_AGE_SECONDS


def csrf_token() -> str:
    """This session's CSRF token, created on first use (the sign-in form needs one too)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def csrf_ok() -> bool:
    """True when the POSTed form carries this session's CSRF token."""
    expected = session.get(CSRF_FIELD)
    submitted = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not submitted:
        return False
    return hmac.compare_digest(submitted.encode(), expected.encode())


def check_csrf() -> None:
    """Blueprint before_request hook: every POST must carry the session's CSRF token."""
    if request.method == "POST" and not csrf_ok():
        abort(400, description="The form was stale or not sent from this dashboard. "
                               "Reload the page and try again.")  # fmt: skip


def safe_next(target: str | None, default: str) -> str:
    """`next` normalised, if it is a path inside the dashboard; else `default`.

    Refuses control characters (a newline would break the Location header), backslashes, a
    scheme or host, and any path that leaves /dashboard once `.`/`..` segments are resolved,
    percent-encoded or not, as a browser would (no open redirect, no `/dashboard/../v1`).
    """
    if not target or "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return default
    for path in (parts.path, unquote(parts.path)):
        normal = posixpath.normpath(path)
        if normal != DASHBOARD and not normal.startswith(DASHBOARD + "/"):
            return default
    path = posixpath.normpath(parts.path)
    if parts.path.endswith("/") and not path.endswith("/"):
        path += "/"
    return path + (f"?{parts.query}" if parts.query else "")
