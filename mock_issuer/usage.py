"""Usage records (every token creation and verification) and their counts per time bucket.

Each record: time, kind (`create`, `reuse` or `verify`), token format, subject machine (the
token's owner, when known) and outcome (`ok` or `failed`). Records are written in the same
transaction as the operation they describe; a trigger adds each to the rollups (rollups.py),
which every report reads.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any

from . import db, rollups

RANGES = {"hour": 3600, "day": 86_400, "30d": 30 * 86_400}
DEFAULT_BUCKETS = {"hour": 60, "day": 3600, "30d": 86_400}
MAX_BUCKETS = 2000
# Ranges whose buckets may be any whole number of seconds; the others take whole minutes,
# since per-second counters are kept only a few hours (retention.py).
SECOND_BUCKET_RANGES = ("hour",)
FORMATS = ("opaque", "jwt")

CountKey = tuple[str, str, str]  # (kind, format, outcome)
_END_OF_TIME = 2**62


def record(
    conn: sqlite3.Connection,
    kind: str,
    token_format: str,
    machine_id: str | None,
    outcome: str = "ok",
    ts: int | None = None,
) -> None:
    """Append one usage record (call inside the operation's write transaction)."""
    conn.execute(
        "INSERT INTO usage_events (ts, kind, format, machine_id, outcome) VALUES (?, ?, ?, ?, ?)",
        (ts if ts is not None else db.now_ms(), kind, token_format, machine_id, outcome),
    )


def _empty_counts() -> dict[str, Any]:
    return {
        "creations": {"opaque": 0, "jwt": 0, "total": 0},
        "reuses": {"opaque": 0, "total": 0},
        "verifications": {
            "opaque": {"ok": 0, "failed": 0},
            "jwt": {"ok": 0, "failed": 0},
            "total": 0,
        },
    }


def _add(counts: dict[str, Any], kind: str, fmt: str, outcome: str, n: int) -> None:
    if kind == "create":
        counts["creations"][fmt] = counts["creations"].get(fmt, 0) + n
        counts["creations"]["total"] += n
    elif kind == "reuse":
        counts["reuses"][fmt] = counts["reuses"].get(fmt, 0) + n
        counts["reuses"]["total"] += n
    elif kind == "verify":
        counts["verifications"][fmt][outcome] += n
        counts["verifications"]["total"] += n


def usage_report(
    conn: sqlite3.Connection,
    range_name: str = "day",
    *,
    machine_id: str | None = None,
    bucket_seconds: int | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """Counts per bucket over the range ending now, totals, and totals per subject machine,
    read from the rollups (rollups.py). `bucket_seconds` must be whole minutes beyond the hour
    range: per-second counters are kept only for the last hours."""
    now = now if now is not None else db.now_ms()
    span_ms = RANGES[range_name] * 1000
    bucket_ms = (bucket_seconds or DEFAULT_BUCKETS[range_name]) * 1000
    # Buckets are aligned to multiples of their size so charts do not shift between calls.
    first = (now - span_ms) // bucket_ms * bucket_ms + bucket_ms
    buckets = {
        start: {"start": start, "end": start + bucket_ms, **_empty_counts()}
        for start in range(first, now + 1, bucket_ms)
    }
    totals = _empty_counts()
    rows = rollups.grouped_counts(conn, first, now + 1, bucket_ms=bucket_ms, machine_id=machine_id)
    for row in rows:
        if row["format"] not in FORMATS:
            continue
        _add(buckets[row["bucket"]], row["kind"], row["format"], row["outcome"], row["n"])
        _add(totals, row["kind"], row["format"], row["outcome"], row["n"])
    per_machine: dict[str | None, dict[str, Any]] = {}
    rows = rollups.grouped_counts(conn, first, now + 1, per_machine=True, machine_id=machine_id)
    for row in rows:
        if row["format"] not in FORMATS:
            continue
        mid = row["machine_id"] or None  # '' in the counters: a verification of an unknown token
        entry = per_machine.setdefault(mid, {"machine_id": mid, **_empty_counts()})
        _add(entry, row["kind"], row["format"], row["outcome"], row["n"])
    return {
        "object": "usage",
        "range": range_name,
        "bucket_seconds": bucket_ms // 1000,
        "start": first,
        "end": now,
        "machine_id": machine_id,
        "buckets": list(buckets.values()),
        "totals": totals,
        "machines": sorted(per_machine.values(), key=lambda m: m["machine_id"] or ""),
    }


# ---- counts for the cost estimate and the Prometheus counters ----


def counts_since(conn: sqlite3.Connection, since_ms: int = 0) -> Counter[CountKey]:
    """How many usage records of each (kind, format, outcome) have `ts >= since_ms`, counted
    from the start of since_ms's minute: per-minute counters are the finest kept for a month."""
    since = since_ms // rollups.MINUTE_MS * rollups.MINUTE_MS
    rows = rollups.grouped_counts(conn, since, _END_OF_TIME)
    return Counter({(r[1], r[2], r[3]): r[4] for r in rows if r[2] in FORMATS})


def all_time_counts(conn: sqlite3.Connection) -> Counter[CountKey]:
    """Every usage record since the database was created, by (kind, format, outcome): a read
    of a dozen rows, whatever the history (the Prometheus counters)."""
    rows = conn.execute("SELECT kind, format, outcome, n FROM usage_totals").fetchall()
    return Counter({(r[0], r[1], r[2]): r[3] for r in rows if r[1] in FORMATS})
