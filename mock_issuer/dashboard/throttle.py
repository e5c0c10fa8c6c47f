"""Dashboard sign-in throttling: after MAX_FAILURES wrong keys from one client within
WINDOW_SECONDS, that client's sign-ins answer 429 with Retry-After until the window ends.

Failures are counted in the database, so every gunicorn worker shares one count per client, and
each throttled period is logged once (not once per refused request). The client is the
connection's address: behind a proxy every visitor shares the proxy's, which throttles them
together (the safe direction for a sign-in form).
"""

from __future__ import annotations

import logging
import sqlite3

from .. import db

log = logging.getLogger("mock_issuer")

MAX_FAILURES = 5
WINDOW_SECONDS = 60
TABLE = """
CREATE TABLE IF NOT EXISTS sign_in_failures (
    client TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    logged INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID
"""


def retry_after(conn: sqlite3.Connection, client: str) -> int | None:
    """Seconds until `client` may try again, or None when it is not throttled. The first
    refusal of a throttled period writes the period's one log line."""
    conn.execute(TABLE)
    now = db.now_ms()
    window_end = now - WINDOW_SECONDS * 1000
    with db.write(conn):
        row = conn.execute(
            "SELECT window_start, failures FROM sign_in_failures WHERE client = ?"
            " AND window_start > ? AND failures >= ?",
            (client, window_end, MAX_FAILURES),
        ).fetchone()
        if row is None:
            return None
        first = conn.execute(
            "UPDATE sign_in_failures SET logged = 1 WHERE client = ? AND logged = 0", (client,)
        ).rowcount
    seconds = max(1, -(-(row[0] + WINDOW_SECONDS * 1000 - now) // 1000))
    if first:
        log.warning(
            "dashboard sign-in from %s throttled for %d s after %d wrong keys",
            client,
            seconds,
            row[1],
        )
    return seconds


def record_failure(conn: sqlite3.Connection, client: str) -> None:
    """Count one wrong key; a failure after the window has passed starts a new window. Rows of
    ended windows are dropped, so the table holds only clients failing right now."""
    conn.execute(TABLE)
    now = db.now_ms()
    window_end = now - WINDOW_SECONDS * 1000
    with db.write(conn):
        conn.execute("DELETE FROM sign_in_failures WHERE window_start <= ?", (window_end,))
        conn.execute(
            "INSERT INTO sign_in_failures (client, window_start, failures) VALUES (?, ?, 1)"
            " ON CONFLICT (client) DO UPDATE SET failures = failures + 1",
            (client, now),
        )


def forget(conn: sqlite3.Connection, client: str) -> None:
    """A successful sign-in clears the client's count."""
    conn.execute(TABLE)
    with db.write(conn):
        conn.execute("DELETE FROM sign_in_failures WHERE client = ?", (client,))
