"""Read-only usage counts the core's service layer does not offer (yet): counts since an
instant (the month-to-date cost estimate) and all-time counts (the Prometheus counters).

Reads the counters the `usage_events` trigger keeps (rollups.py); nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

from . import rollups, usage

CountKey = tuple[str, str, str]  # (kind, format, outcome)
_END_OF_TIME = 2**62


def counts_since(conn: sqlite3.Connection, since_ms: int = 0) -> Counter[CountKey]:
    """How many usage records of each (kind, format, outcome) have `ts >= since_ms`, counted
    from the start of since_ms's minute: per-minute counters are the finest kept for a month."""
    since = since_ms // rollups.MINUTE_MS * rollups.MINUTE_MS
    rows = rollups.grouped_counts(conn, since, _END_OF_TIME)
    return Counter({(r[1], r[2], r[3]): r[4] for r in rows if r[2] in usage.FORMATS})


def all_time_counts(conn: sqlite3.Connection) -> Counter[CountKey]:
    """Every usage record since the database was created, by (kind, format, outcome): a read
    of a dozen rows, whatever the history."""
    rows = conn.execute("SELECT kind, format, outcome, n FROM usage_totals").fetchall()
    return Counter({(r[0], r[1], r[2]): r[3] for r in rows if r[1] in usage.FORMATS})


def billable_counts(counts: Counter[CountKey]) -> tuple[int, int]:
    """(token creations, opaque verifications): what Clerk bills. Verifications count whatever
    their outcome; reuses of an existing token are not creations; JWT verifications are free."""
    creations = sum(n for (kind, _, _), n in counts.items() if kind == "create")
    opaque_verifications = sum(
        n for (kind, fmt, _), n in counts.items() if kind == "verify" and fmt == "opaque"
    )
    return creations, opaque_verifications
