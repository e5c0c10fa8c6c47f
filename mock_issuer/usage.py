"""Usage records (every token creation and verification) and their counts per time bucket.

Each record: time, kind (`create`, `reuse` or `verify`), token format, subject machine (the
token's owner, when known) and outcome (`ok` or `failed`). Records are written in the same
transaction as the operation they describe.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any

from . import db

RANGES = {"hour": 3600, "day": 86_400, "30d": 30 * 86_400}
DEFAULT_BUCKETS = {"hour": 60, "day": 3600, "30d": 86_400}
MAX_BUCKETS = 2000
FORMATS = ("opaque", "jwt")

CountKey = tuple[str, str, str]  # (kind, format, outcome)


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
    """Counts per bucket over the range ending now, totals, and totals per subject machine."""
    now = now if now is not None else db.now_ms()
    span_ms = RANGES[range_name] * 1000
    bucket_ms = (bucket_seconds or DEFAULT_BUCKETS[range_name]) * 1000
    # Buckets are aligned to multiples of their size so charts do not shift between calls.
    first = (now - span_ms) // bucket_ms * bucket_ms + bucket_ms
    buckets = {
        start: {"start": start, "end": start + bucket_ms, **_empty_counts()}
        for start in range(first, now + 1, bucket_ms)
    }
    where = "ts >= ? AND ts <= ?"
    params: list[Any] = [first, now]
    if machine_id:
        where += " AND machine_id = ?"
        params.append(machine_id)
    totals = _empty_counts()
    rows = conn.execute(
        f"SELECT (ts / ?) * ? AS bucket, kind, format, outcome, COUNT(*) AS n"  # noqa: S608
        f" FROM usage_events WHERE {where} GROUP BY bucket, kind, format, outcome",
        [bucket_ms, bucket_ms, *params],
    ).fetchall()
    for row in rows:
        if row["format"] not in FORMATS:
            continue
        _add(buckets[row["bucket"]], row["kind"], row["format"], row["outcome"], row["n"])
        _add(totals, row["kind"], row["format"], row["outcome"], row["n"])
    per_machine: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        f"SELECT machine_id, kind, format, outcome, COUNT(*) AS n FROM usage_events"  # noqa: S608
        f" WHERE {where} GROUP BY machine_id, kind, format, outcome",
        params,
    ).fetchall()
    for row in rows:
        if row["format"] not in FORMATS:
            continue
        entry = per_machine.setdefault(
            row["machine_id"], {"machine_id": row["machine_id"], **_empty_counts()}
        )
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
    """How many usage records of each (kind, format, outcome) have `ts >= since_ms`."""
    rows = conn.execute(
        "SELECT kind, format, outcome, COUNT(*) FROM usage_events WHERE ts >= ?"
        " GROUP BY kind, format, outcome",
        (since_ms,),
    ).fetchall()
    return _counts(rows)


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
    return _counts(rows)


def _counts(rows: list[sqlite3.Row]) -> Counter[CountKey]:
    """(kind, format, outcome, n) rows as a Counter; formats we do not chart are left out."""
    return Counter({(r[0], r[1], r[2]): r[3] for r in rows if r[1] in FORMATS})
