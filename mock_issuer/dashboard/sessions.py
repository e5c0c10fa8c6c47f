"""Dashboard session generation: signing out, or a new instance secret key, ends every session
cookie issued before, without a session store.

The database keeps one random generation value; a cookie carries HMAC(instance secret key,
generation) from its sign-in. Signing out draws a new generation, so every earlier stamp stops
matching in every worker; a new CLERK_SECRET_KEY changes every stamp too, even when the cookie
signing secret is fixed by MOCK_ISSUER_SESSION_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3

from .. import db

GENERATION_KEY = "dashboard_session_generation"  # its row in the `meta` table
STAMP_LABEL = b"mock-issuer dashboard session generation v1\x00"


def session_stamp(conn: sqlite3.Connection, instance_secret_key: str) -> str:
    """The value a cookie signed in now carries, and must still carry to stay signed in."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (GENERATION_KEY,)).fetchone()
    message = STAMP_LABEL + (row[0] if row else "").encode()
    return hmac.new(instance_secret_key.encode(), message, hashlib.sha256).hexdigest()


def stamp_matches(conn: sqlite3.Connection, instance_secret_key: str, carried: object) -> bool:
    """Constant-time check of the stamp a cookie carries against the current one."""
    if not isinstance(carried, str):
        return False
    return hmac.compare_digest(carried.encode(), session_stamp(conn, instance_secret_key).encode())


def end_all_sessions(conn: sqlite3.Connection) -> None:
    """Draw a new generation: every cookie signed in before stops working."""
    with db.write(conn):
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (GENERATION_KEY, secrets.token_hex(16)),
        )
