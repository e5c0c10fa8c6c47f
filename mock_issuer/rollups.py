"""Usage counters kept per second, minute and hour, so usage figures cost the same at any volume.

Every usage record (`usage.record`, a row of `usage_events`) adds one to its second, its minute
and its hour in `usage_rollups`, and to the all-time `usage_totals`, by machine, kind, format
and outcome: a trigger does it in the same transaction as the record, so the counters can never
disagree with the records, whoever writes them. A count over [lo, hi) reads whole hours in the
middle, whole minutes and seconds towards the edges and raw records only inside the first and
last second (`cover`), so it reads a few thousand small rows whatever the history.

Raw records and per-second counters are kept briefly; minutes and hours as long as usage is
(retention.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

SECOND_MS, MINUTE_MS, HOUR_MS = 1000, 60_000, 3_600_000
SIZES = (HOUR_MS, MINUTE_MS, SECOND_MS)  # coarsest first
RAW = 0  # the cell size that stands for raw records in `cover`
_BACKFILLED = "usage_rollups_v1"  # meta key: rollups were filled from the existing records
_SIZES_SQL = ", ".join(f"({size})" for size in SIZES)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS usage_rollups (
    size INTEGER NOT NULL,  -- cell length in ms: 1000, 60000 or 3600000
    start INTEGER NOT NULL,  -- cell start (ms), a multiple of size
    machine_id TEXT NOT NULL,  -- '' for verifications of unknown tokens
    kind TEXT NOT NULL,
    format TEXT NOT NULL,
    outcome TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (size, start, machine_id, kind, format, outcome)
) WITHOUT ROWID;
-- Every record since the database was created (the Prometheus counters); never pruned.
CREATE TABLE IF NOT EXISTS usage_totals (
    kind TEXT NOT NULL,
    format TEXT NOT NULL,
    outcome TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (kind, format, outcome)
) WITHOUT ROWID;
-- Once, in init_db's BEGIN IMMEDIATE (so of the workers starting together on a file written
-- before the counters existed, one fills them from its records and the others see it done).
INSERT INTO usage_rollups (size, start, machine_id, kind, format, outcome, n)
    SELECT column1, ts - ts % column1, COALESCE(machine_id, ''), kind, format, outcome, COUNT(*)
    FROM usage_events, (VALUES {_SIZES_SQL})
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = '{_BACKFILLED}')
    GROUP BY 1, 2, 3, 4, 5, 6;
INSERT INTO usage_totals (kind, format, outcome, n)
    SELECT kind, format, outcome, COUNT(*) FROM usage_events
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = '{_BACKFILLED}')
    GROUP BY 1, 2, 3;
INSERT OR IGNORE INTO meta (key, value) VALUES ('{_BACKFILLED}', '1');
CREATE TRIGGER IF NOT EXISTS usage_events_count AFTER INSERT ON usage_events BEGIN
    INSERT INTO usage_rollups (size, start, machine_id, kind, format, outcome, n)
        SELECT column1, NEW.ts - NEW.ts % column1, COALESCE(NEW.machine_id, ''), NEW.kind,
            NEW.format, NEW.outcome, 1
        FROM (VALUES {_SIZES_SQL}) WHERE true
        ON CONFLICT DO UPDATE SET n = n + 1;
    INSERT INTO usage_totals (kind, format, outcome, n)
        VALUES (NEW.kind, NEW.format, NEW.outcome, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
"""  # noqa: S608 (constants only)


def cover(lo: int, hi: int, sizes: Sequence[int] = SIZES) -> list[tuple[int, int, int]]:
    """Split [lo, hi) into (cell size, start, end) runs of whole cells: the coarsest size that
    fits in the middle, finer ones towards the edges, raw records (size RAW) inside the first
    and last second."""
    if lo >= hi:
        return []
    if not sizes:
        return [(RAW, lo, hi)]
    size, finer = sizes[0], sizes[1:]
    first, last = -(-lo // size) * size, hi // size * size
    if first >= last:
        return cover(lo, hi, finer)
    return [*cover(lo, first, finer), (size, first, last), *cover(last, hi, finer)]


def grouped_counts(
    conn: sqlite3.Connection,
    lo: int,
    hi: int,
    *,
    bucket_ms: int | None = None,
    per_machine: bool = False,
    machine_id: str | None = None,
) -> list[sqlite3.Row]:
    """Records with lo <= ts < hi counted per (kind, format, outcome), and per bucket of
    `bucket_ms` (buckets aligned to multiples of it) or per machine ('' for unknown tokens).
    With buckets, only cells that fit in one bucket are read (bucket_ms a multiple of them)."""
    sizes = [s for s in SIZES if bucket_ms is None or bucket_ms % s == 0]
    parts: list[str] = []
    params: list[Any] = []
    for size, start, end in cover(lo, hi, sizes):
        if size == RAW:
            parts.append(
                "SELECT ts, COALESCE(machine_id, '') AS machine_id, kind, format, outcome,"
                " 1 AS n FROM usage_events WHERE ts >= ? AND ts < ?"
            )
            params += [start, end]
        else:
            parts.append(
                "SELECT start AS ts, machine_id, kind, format, outcome, n FROM usage_rollups"
                " WHERE size = ? AND start >= ? AND start < ?"
            )
            params += [size, start, end]
        if machine_id is not None:
            parts[-1] += " AND machine_id = ?"
            params.append(machine_id)
    if not parts:
        return []
    if bucket_ms is not None:
        group, params = "(ts / ?) * ? AS bucket", [bucket_ms, bucket_ms, *params]
    else:
        group = "machine_id" if per_machine else "NULL AS unused"
    group_by = "1, " if bucket_ms is not None or per_machine else ""
    return conn.execute(
        f"SELECT {group}, kind, format, outcome, SUM(n) AS n"  # noqa: S608 (no input in SQL)
        f" FROM ({' UNION ALL '.join(parts)}) GROUP BY {group_by}kind, format, outcome",
        params,
    ).fetchall()
