"""The usage counters (rollups.py) give exactly the figures a count of the raw usage records
gives: reports at bucket and range edges, per machine (deleted ones included), the cost
estimate's counts and free tiers, the Prometheus totals, and a database written before the
counters existed."""

from __future__ import annotations

import dataclasses
import itertools
import random
import sqlite3
from collections import Counter
from datetime import UTC, datetime

import pytest

from mock_issuer import db, rollups, usage
from mock_issuer.dashboard import pricing
from mock_issuer.dashboard.pricing import billable_counts
from tests.issuer_calls import mint
from tests.seed import CALLER, OUTSIDER, RECEIVER, SK
from tests.seed import make_issuer_app as make_app

NOW = 1_767_225_599_999  # 2025-12-31 23:59:59.999 UTC: the last instant of a month and a year
HOUR, DAY = 3_600_000, 86_400_000
GONE = "mch_deleted000000000000000000000"[:31]  # a machine deleted since (no machines row)
KINDS = [
    ("create", "opaque", "ok"),
    ("create", "jwt", "ok"),
    ("reuse", "opaque", "ok"),
    ("verify", "opaque", "ok"),
    ("verify", "opaque", "failed"),
    ("verify", "jwt", "ok"),
    ("verify", "jwt", "failed"),
]


def raw_report(conn, range_name, *, machine_id=None, bucket_seconds=None, now):
    """The report as it was computed before the counters: straight from the raw records."""
    span, bucket = (
        usage.RANGES[range_name] * 1000,
        (bucket_seconds or usage.DEFAULT_BUCKETS[range_name]) * 1000,
    )
    first = (now - span) // bucket * bucket + bucket
    buckets = Counter()
    machines = Counter()
    where, params = "ts >= ? AND ts <= ?", [first, now]
    if machine_id:
        where, params = where + " AND machine_id = ?", [*params, machine_id]
    for ts, mid, kind, fmt, outcome in conn.execute(
        f"SELECT ts, machine_id, kind, format, outcome FROM usage_events WHERE {where}",  # noqa: S608
        params,
    ):
        buckets[(ts // bucket * bucket, kind, fmt, outcome)] += 1
        machines[(mid, kind, fmt, outcome)] += 1
    return buckets, machines


def flatten(report):
    """The report's per-bucket and per-machine counts as Counters, zeros left out."""
    buckets, machines = Counter(), Counter()
    for key, entries, into in (
        ("start", report["buckets"], buckets),
        ("machine_id", report["machines"], machines),
    ):
        for entry in entries:
            for kind, fmt, outcome in KINDS:
                section = {"create": "creations", "reuse": "reuses", "verify": "verifications"}
                counts = entry[section[kind]]
                n = counts[fmt][outcome] if kind == "verify" else counts.get(fmt, 0)
                if n:
                    into[(entry[key], kind, fmt, outcome)] += n
    return +buckets, +machines


@pytest.fixture
def conn(tmp_path):
    make_app(tmp_path)
    yield db.connect(str(tmp_path / "issuer.db"))
    db.close_thread_connections()


def record_all(conn, events):
    with db.write(conn):
        for ts, mid, (kind, fmt, outcome) in events:
            usage.record(conn, kind, fmt, mid, outcome, ts=ts)


def edge_events(rng: random.Random) -> list:
    """Records on and around every edge a report has (bucket, minute, second, range start,
    `now`), spread over 31 days, from known, deleted and unknown machines."""
    times = [NOW, NOW - 1, NOW + 1]
    for span in (HOUR, DAY, 30 * DAY):
        for bucket in (1000, 2000, 60_000, 300_000, 600_000, HOUR, DAY):
            start = (NOW - span) // bucket * bucket + bucket
            times += [start - 1, start, start + 1, start + bucket - 1, start + bucket]
    times += [NOW - rng.randrange(31 * DAY) for _ in range(400)]
    times += [NOW - rng.randrange(2 * HOUR) for _ in range(200)]
    machines = [CALLER.id, OUTSIDER.id, GONE, None]
    return [(ts, rng.choice(machines), rng.choice(KINDS)) for ts in times]


@pytest.mark.parametrize(
    ("range_name", "bucket_seconds"),
    [
        ("hour", None),
        ("hour", 300),
        ("hour", 2),
        ("hour", 7),
        ("day", None),
        ("day", 600),
        ("day", 60),
        ("30d", None),
        ("30d", 3600),
        ("30d", 1800),
    ],
)
def test_reports_from_the_counters_equal_the_raw_record_counts(conn, range_name, bucket_seconds):
    record_all(conn, edge_events(random.Random(11)))
    for machine_id in (None, CALLER.id, GONE):
        for now in (NOW, NOW - 1, NOW - 59_999, NOW - 1000):
            report = usage.usage_report(
                conn, range_name, machine_id=machine_id, bucket_seconds=bucket_seconds, now=now
            )
            expected = raw_report(
                conn, range_name, machine_id=machine_id, bucket_seconds=bucket_seconds, now=now
            )
            assert flatten(report) == expected, (machine_id, now)


def test_a_deleted_machine_keeps_its_figures_and_unknown_tokens_count_apart(conn):
    record_all(conn, [(NOW - 5, GONE, KINDS[0]), (NOW - 4, None, KINDS[4])])
    machines = {m["machine_id"]: m for m in usage.usage_report(conn, "hour", now=NOW)["machines"]}
    assert machines[GONE]["creations"]["opaque"] == 1
    assert machines[None]["verifications"]["opaque"]["failed"] == 1


def raw_counts_since(conn: sqlite3.Connection, since: int) -> Counter:
    rows = conn.execute(
        "SELECT kind, format, outcome, COUNT(*) FROM usage_events WHERE ts >= ?"
        " GROUP BY kind, format, outcome",
        (since,),
    )
    return Counter({(k, f, o): n for k, f, o, n in rows})


def test_cost_estimate_counts_equal_the_raw_counts_and_keep_the_free_tiers(conn):
    record_all(conn, edge_events(random.Random(5)))
    now_dt = datetime.fromtimestamp(NOW / 1000, UTC)
    month_start = int(pricing.month_bounds(now_dt)[0].timestamp() * 1000)
    assert +usage.counts_since(conn, month_start) == raw_counts_since(conn, month_start)
    for since in (NOW - 30 * DAY, 0, NOW, NOW + 1):  # other instants count from their minute
        minute = since // 60_000 * 60_000
        assert +usage.counts_since(conn, since) == raw_counts_since(conn, minute)
    counts = billable_counts(usage.counts_since(conn, month_start))
    prices = dataclasses.replace(
        pricing.CLERK_PRICES, free_creations=counts[0] - 1, free_verifications=counts[1] + 1
    )
    creations, verifications = pricing.estimate(counts, counts, prices, now_dt).month_to_date
    assert (creations.billable, creations.free) == (1, counts[0] - 1)
    assert (verifications.billable, verifications.free) == (0, counts[1])


def test_all_time_totals_equal_the_raw_counts(conn):
    record_all(conn, edge_events(random.Random(3)))
    assert usage.all_time_counts(conn) == raw_counts_since(conn, 0)


def test_cover_uses_whole_cells_and_raw_records_only_inside_the_edge_seconds():
    pieces = rollups.cover(NOW - 30 * DAY - 1234, NOW + 1)
    assert pieces[0] == (rollups.RAW, NOW - 30 * DAY - 1234, NOW - 30 * DAY - 1000 + 1)
    assert [p[1:] for p in pieces] == sorted(p[1:] for p in pieces)
    assert all(a < b for _, a, b in pieces)
    assert all(a == b for (_, _, a), (_, b, _) in itertools.pairwise(pieces))
    assert all(size == rollups.RAW or (a % size == 0 and b % size == 0) for size, a, b in pieces)
    assert sum(b - a for size, a, b in pieces if size == rollups.RAW) < 2000


def test_counters_are_filled_from_a_database_written_before_they_existed(tmp_path):
    path = str(tmp_path / "old.db")
    db.init_db(path)
    conn = db.connect(path)
    events = edge_events(random.Random(7))
    conn.executescript(
        "DROP TRIGGER usage_events_count; DROP TABLE usage_rollups; DROP TABLE usage_totals;"
        " DELETE FROM meta WHERE key = 'usage_rollups_v1';"
    )  # the file as an issuer before the counters left it
    record_all(conn, events)
    db.init_db(path)  # the upgraded issuer starts on it (twice: the second run adds nothing)
    db.init_db(path)
    report = usage.usage_report(conn, "30d", now=NOW)
    assert flatten(report) == raw_report(conn, "30d", now=NOW)
    assert usage.all_time_counts(conn) == raw_counts_since(conn, 0)
    record_all(conn, events[:1])  # and the trigger counts what comes next
    assert usage.all_time_counts(conn) == raw_counts_since(conn, 0)
    db.close_thread_connections()


def test_usage_api_counts_what_the_requests_did(tmp_path):
    client = make_app(tmp_path).test_client()
    mint(client)
    mint(client, token_format="jwt", key=RECEIVER.secret_key)
    body = client.get("/v1/usage?range=hour&bucket=2", headers=SK).json
    assert body["totals"]["creations"] == {"opaque": 1, "jwt": 1, "total": 2}
    assert sum(b["creations"]["total"] for b in body["buckets"]) == 2
    db.close_thread_connections()
