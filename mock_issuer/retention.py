"""Retention: delete what the issuer no longer needs, so the database stops growing.

- `jwt_issued` rows once their JWT has expired: they only keep a retired signing key published
  and let revoke say "JWTs cannot be revoked", and both concern live JWTs alone.
- Opaque tokens expired, or revoked, more than the retention period ago
  (`MOCK_ISSUER_RETENTION_DAYS`, default 30): Clerk lists expired and revoked tokens on request
  (`expired=true`, `revoked=true`), so they stay listable that long.
- Usage: raw records after an hour and per-second counters after two (reports read them only
  at the edges of the last hour, rollups.py); per-minute and per-hour counters after the
  retention period, but never younger than 32 days: the dashboard charts 30 days and bills the
  month so far. The all-time totals are never pruned.

Deletes run in batches of at most BATCH rows, each its own short transaction, so a writer
waits at most one batch; `between_batches` may pause, and stops the work by returning False.
Nothing here runs inside a request: pruning.py runs it in the background.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from . import db
from .rollups import HOUR_MS, MINUTE_MS, SECOND_MS

MIN_USAGE_RETENTION_MS = 32 * 86_400_000
RAW_USAGE_RETENTION_MS = HOUR_MS
SECOND_COUNTERS_RETENTION_MS = 2 * HOUR_MS
BATCH = 1000
ROLLUP_KEY = "size, start, machine_id, kind, format, outcome"


class Stopped(Exception):
    """`between_batches` asked to stop (process exit, or the pruning lease was lost)."""


def _delete_in_batches(
    conn: sqlite3.Connection,
    table: str,
    where: str,
    params: tuple,
    between_batches: Callable[[], bool],
    key: str = "rowid",
) -> int:
    deleted = 0
    while True:
        with db.write(conn):
            n = conn.execute(
                f"DELETE FROM {table} WHERE ({key}) IN"  # noqa: S608 (fixed names, no input)
                f" (SELECT {key} FROM {table} WHERE {where} LIMIT {BATCH})",
                params,
            ).rowcount
        deleted += n
        if n < BATCH:
            return deleted
        if not between_batches():
            raise Stopped


def prune(
    conn: sqlite3.Connection,
    *,
    retention_ms: int,
    now: int | None = None,
    between_batches: Callable[[], bool] = lambda: True,
) -> dict[str, int]:
    """Delete what is past keeping (see the module docstring); returns rows deleted per table.
    Raises Stopped if `between_batches` returned False (what was deleted stays deleted)."""
    now = db.now_ms() if now is None else now
    cutoff = now - retention_ms
    usage_cutoff = now - max(retention_ms, MIN_USAGE_RETENTION_MS)

    def batches(table: str, where: str, params: tuple, key: str = "rowid") -> int:
        return _delete_in_batches(conn, table, where, params, between_batches, key)

    rollups_where = "size = ? AND start < ?"
    return {
        "jwt_issued": batches("jwt_issued", "expiration <= ?", (now,)),
        "m2m_tokens": batches("m2m_tokens", "expiration <= ?", (cutoff,))
        + batches("m2m_tokens", "revoked = 1 AND updated_at <= ?", (cutoff,)),
        "usage_events": batches("usage_events", "ts < ?", (now - RAW_USAGE_RETENTION_MS,)),
        "usage_rollups": sum(
            batches("usage_rollups", rollups_where, (size, keep_from), ROLLUP_KEY)
            for size, keep_from in (
                (SECOND_MS, now - SECOND_COUNTERS_RETENTION_MS),
                (MINUTE_MS, usage_cutoff),
                (HOUR_MS, usage_cutoff),
            )
        ),
    }
