"""Clerk's Backend API rate limit per instance, emulated (ours; off by default).

`MOCK_ISSUER_RATE_LIMIT`: `development` (Clerk's 100 requests per 10 s), `production` (1000 per
10 s), `N/Ws` such as `5/1s`, or `off`. A fixed window shared by every gunicorn worker through
the database, so a burst across a window edge can pass up to twice the limit, as with any
fixed window. `faults.py` applies it to Clerk's API routes and answers 429 over it.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from . import db

PRESETS = {"development": (100, 10), "production": (1000, 10)}
SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_limit_windows (
    window_start INTEGER PRIMARY KEY,
    count INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` requests per fixed window of `window_seconds`, for the whole instance."""

    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, text: str) -> RateLimit | None:
        """The variable's value; RuntimeError naming it when it is none of the forms."""
        text = text.strip().lower()
        if text in ("", "off"):
            return None
        if text in PRESETS:
            return cls(*PRESETS[text])
        match = re.fullmatch(r"(\d{1,7})\s*/\s*(\d{1,4})\s*s", text)
        if not match or int(match[1]) < 1 or not 1 <= int(match[2]) <= 3600:
            raise RuntimeError(
                "MOCK_ISSUER_RATE_LIMIT must be off, development, production or N/Ws (e.g. 5/1s)"
            )
        return cls(int(match[1]), int(match[2]))

    def describe(self) -> str:
        return f"rate limit of {self.limit} requests per {self.window_seconds} s"

    def count(self, conn: sqlite3.Connection) -> int | None:
        """Count one request into the current window; over the limit, the seconds until the
        window ends (the Retry-After), else None."""
        window_ms = self.window_seconds * 1000
        now = db.now_ms()
        start = now - now % window_ms
        with db.write(conn):
            conn.execute("DELETE FROM rate_limit_windows WHERE window_start < ?", (start,))
            used = conn.execute(
                "INSERT INTO rate_limit_windows (window_start, count) VALUES (?, 1)"
                " ON CONFLICT (window_start) DO UPDATE SET count = count + 1 RETURNING count",
                (start,),
            ).fetchone()[0]
        return -(-(start + window_ms - now) // 1000) if used > self.limit else None
