"""Retention: delete what the issuer no longer needs, so the database stops growing.

- `jwt_issued` rows once their JWT has expired: they only keep a retired signing key published
  and let revoke say "JWTs cannot be revoked", and both concern live JWTs alone.
- Opaque tokens expired, or revoked, more than the retention period ago
  (`MOCK_ISSUER_RETENTION_DAYS`, default 30): Clerk lists expired and revoked tokens on request
  (`expired=true`, `revoked=true`), so they stay listable that long.
- Usage records older than the retention period, but never younger than 32 days: the dashboard
  charts 30 days and bills the month so far. The newest record is always kept, so record ids
  never restart (the Prometheus counters read new records by id).

`maybe_prune` runs at most once a minute per process (called after a token is minted, so
requests that change nothing never delete anything); deletes run in small batches, each its
own short transaction, so other writers are never held up for long.
"""

from __future__ import annotations

import sqlite3
import threading

from . import db

MIN_USAGE_RETENTION_MS = 32 * 86_400_000
PRUNE_INTERVAL_MS = 60_000
BATCH = 2000

_lock = threading.Lock()
_last_run: dict[str, int] = {}


def _delete_in_batches(conn: sqlite3.Connection, table: str, where: str, params: tuple) -> int:
    deleted = 0
    while True:
        with db.write(conn):
            n = conn.execute(
                f"DELETE FROM {table} WHERE rowid IN"  # noqa: S608 (fixed names, no input)
                f" (SELECT rowid FROM {table} WHERE {where} LIMIT {BATCH})",
                params,
            ).rowcount
        deleted += n
        if n < BATCH:
            return deleted


def prune(conn: sqlite3.Connection, *, retention_ms: int, now: int | None = None) -> dict[str, int]:
    """Delete what is past keeping (see the module docstring); returns rows deleted per table."""
    now = db.now_ms() if now is None else now
    cutoff = now - retention_ms
    usage_cutoff = now - max(retention_ms, MIN_USAGE_RETENTION_MS)
    return {
        "jwt_issued": _delete_in_batches(conn, "jwt_issued", "expiration <= ?", (now,)),
        "m2m_tokens": _delete_in_batches(conn, "m2m_tokens", "expiration <= ?", (cutoff,))
        + _delete_in_batches(conn, "m2m_tokens", "revoked = 1 AND updated_at <= ?", (cutoff,)),
        "usage_events": _delete_in_batches(
            conn,
            "usage_events",
            "ts < ? AND id < (SELECT MAX(id) FROM usage_events)",
            (usage_cutoff,),
        ),
    }


def maybe_prune(
    conn: sqlite3.Connection, db_path: str, *, retention_ms: int, now: int | None = None
) -> bool:
    """Prune unless this process already did in the last minute; True if it pruned."""
    now = db.now_ms() if now is None else now
    with _lock:
        last = _last_run.get(db_path)
        if last is not None and 0 <= now - last < PRUNE_INTERVAL_MS:
            return False
        _last_run[db_path] = now
    prune(conn, retention_ms=retention_ms, now=now)
    return True
