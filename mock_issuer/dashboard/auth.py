"""Dashboard sign-in: the instance secret key once, then Flask's signed session cookie; CSRF tokens.

The cookie-signing key is derived from the instance secret key (or set explicitly), so every
gunicorn worker and every restart accepts the same cookies, and changing the instance secret key
signs everybody out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import posixpath
import secrets
import time
from urllib.parse import unquote, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import abort, current_app, request, session

from ..config import current_settings
from ..db import get_conn
from . import sessions

SESSION_LABEL = b"mock-issuer dashboard session cookie v1"
SESSION_MAX_AGE_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
DASHBOARD = "/dashboard"
REVEALED_FIELD = "revealed"
REVEALED_KEY_INFO = b"mock-issuer dashboard revealed secret v1"
NONCE_BYTES = 12
GENERATION_FIELD = "generation"  # see sessions.py


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
    session[GENERATION_FIELD] = sessions.session_stamp(get_conn(), _instance_key())


def sign_out() -> None:
    """End this session and every other one signed in before (copies of cookies included)."""
    sessions.end_all_sessions(get_conn())
    session.clear()


def is_signed_in() -> bool:
    signed_in_at = session.get("signed_in_at")
    if not isinstance(signed_in_at, int):
        return False
    if not 0 <= time.time() - signed_in_at < SESSION_MAX_AGE_SECONDS:
        return False
    return sessions.stamp_matches(get_conn(), _instance_key(), session.get(GENERATION_FIELD))


def _instance_key() -> str:
    return current_settings().clerk_secret_key


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
        abort(
            400,
            description="The form was stale or not sent from this dashboard. "
            "Reload the page and try again.",
        )


def _revealed_cipher() -> AESGCM:
    """AES-GCM under a key derived (HKDF) from the cookie-signing key: every worker has it."""
    signing_key = current_app.secret_key
    if isinstance(signing_key, str):
        signing_key = signing_key.encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=REVEALED_KEY_INFO)
    return AESGCM(hkdf.derive(signing_key))


def stash_revealed(machine_id: str, title: str, secret: str) -> None:
    """Keep a just-created or just-requested secret for the next view of its machine's page
    (post/redirect/get). Encrypted, since the session cookie is signed but readable."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = _revealed_cipher().encrypt(nonce, secret.encode(), machine_id.encode())
    session[REVEALED_FIELD] = {
        "machine_id": machine_id,
        "title": title,
        "sealed": base64.urlsafe_b64encode(nonce + sealed).decode(),
    }


def pop_revealed(machine_id: str) -> tuple[str, str] | None:
    """(title, secret) stashed for this machine, removed from the session so it shows once."""
    entry = session.pop(REVEALED_FIELD, None)
    if not isinstance(entry, dict) or entry.get("machine_id") != machine_id:
        return None
    try:
        raw = base64.urlsafe_b64decode(entry["sealed"])
        secret = _revealed_cipher().decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], machine_id.encode()
        )
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidTag):
        return None
    return str(entry.get("title") or "Secret key"), secret.decode()


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
