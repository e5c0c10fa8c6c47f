"""Read-only usage counts the core's service layer does not offer (yet): counts since an
instant (the month-to-date cost estimate) and counts of new records by id (the Prometheus
counters).

Reads the same `usage_events` table `usage.record()` writes; nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

from . import usage

CountKey = tuple[str, str, str]  # (kind, format, outcome)


def counts_since(conn: sqlite3.Connection, since_ms: int = 0) -> Counter[CountKey]:
    """How many usage records of each (kind, format, outcome) have `ts >= since_ms`."""
    rows = conn.execute(
        "SELECT kind, format, outcome, COUNT(*) FROM usage_events WHERE ts >= ?"
        " GROUP BY kind, format, outcome",
        (since_ms,),
    ).fetchall()
    return Counter({(r[0], r[1], r[2]): r[3] for r in rows if r[1] in usage.FORMATS})


def last_usage_id(conn: sqlite3.Connection) -> int:
    """The id of the newest usage record (0 when there is none)."""
    return conn.execute("SELECT COALESCE(MAX(id), 0) FROM usage_events").fetchone()[0]


def counts_between_ids(conn: sqlite3.Connection, after_id: int, up_to_id: int) -> Counter[CountKey]:
    """Counts of the records with after_id < id <= up_to_id: a range scan of the primary key,
    so a scraper can add only what is new since its last look. Writers take SQLite's write
    lock in turn, so ids become visible in increasing order and none is skipped."""
    rows = conn.execute(
        "SELECT kind, format, outcome, COUNT(*) FROM usage_events WHERE id > ? AND id <= ?"
        " GROUP BY kind, format, outcome",
        (after_id, up_to_id),
    ).fetchall()
    return Counter({(r[0], r[1], r[2]): r[3] for r in rows if r[1] in usage.FORMATS})


def billable_counts(counts: Counter[CountKey]) -> tuple[int, int]:
    """(token creations, opaque verifications): what Clerk bills. Verifications count whatever
    their outcome; reuses of an existing token are not creations; JWT verifications are free."""
    creations = sum(n for (kind, _, _), n in counts.items() if kind == "create")
    opaque_verifications = sum(
        n for (kind, fmt, _), n in counts.items() if kind == "verify" and fmt == "opaque"
    )
    return creations, opaque_verifications
