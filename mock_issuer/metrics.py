"""`GET /metrics` in Prometheus text format (prometheus-client).

Everything is read from the database at scrape time (custom collectors), so the numbers are
the same whichever gunicorn worker answers the scrape, never go backwards when another worker
answers, and survive restarts. Token counters come from the all-time usage counters
(rollups.py). Request latency is
added to a small histogram table by every request (one upsert, ~30 us) instead of living in
each worker's memory, where every scrape would see only the answering worker's requests. That
table lives in its own SQLite file next to the database (`<name>.metrics.db`): recording a
request never writes the issuer's data, and never waits for its write lock.
"""

from __future__ import annotations

import bisect
import logging
import math
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import db, usage
from .usage import CountKey, all_time_counts

log = logging.getLogger("mock_issuer")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_LABELS = ("method", "route", "status")
# One row per (labels, bucket upper bound): a few hundred rows at most, whatever the traffic.
LATENCY_TABLE = """
CREATE TABLE IF NOT EXISTS request_latency (
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    le REAL NOT NULL,
    count INTEGER NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (method, route, status, le)
) WITHOUT ROWID
"""
RECORD_LATENCY = (
    "INSERT INTO request_latency (method, route, status, le, count, seconds)"
    " VALUES (?, ?, ?, ?, 1, ?)"
    " ON CONFLICT DO UPDATE SET count = count + 1, seconds = seconds + excluded.seconds"
)
WARN_EVERY_SECONDS = 60
_last_warning = 0.0


class UsageCollector(Collector):
    """Creation and verification counters from the issuer's all-time usage counters, which
    every usage record adds to in its own transaction: a scrape reads a dozen rows, the first
    one included, however long the issuer has run."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path

    def _current_counts(self) -> Counter[CountKey]:
        return all_time_counts(db.connect(self.db_path))

    def describe(self) -> Iterator[CounterMetricFamily]:
        """The metric names without samples (so registering does not touch the database)."""
        return iter(self._families())

    def collect(self) -> Iterator[CounterMetricFamily]:
        counts = self._current_counts()
        creations, reuses, verifications = self._families()
        for fmt in usage.FORMATS:
            creations.add_metric([fmt], counts[("create", fmt, "ok")])
            reuses.add_metric([fmt], counts[("reuse", fmt, "ok")])
            for outcome in ("ok", "failed"):
                verifications.add_metric([fmt, outcome], counts[("verify", fmt, outcome)])
        yield creations
        yield reuses
        yield verifications

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        creations = CounterMetricFamily(
            "mock_issuer_token_creations",
            "M2M tokens minted, by token format. Counted only when minting succeeds: a refused"
            " create is a 4xx in mock_issuer_request_duration_seconds (route /v1/m2m_tokens or"
            " /m2m_tokens, by status), not a creation.",
            labels=["format"],
        )
        reuses = CounterMetricFamily(
            "mock_issuer_token_reuses",
            "Create requests answered with an existing live token (min_remaining_ttl_seconds).",
            labels=["format"],
        )
        verifications = CounterMetricFamily(
            "mock_issuer_token_verifications",
            "Token verifications answered by this issuer, by token format and outcome.",
            labels=["format", "outcome"],
        )
        return creations, reuses, verifications


def record_latency(
    conn: sqlite3.Connection, method: str, route: str, status: str, seconds: float
) -> None:
    """Add one request to the shared histogram table: its bucket's count and its seconds.
    A database error is logged (at most once a minute) and never fails the request."""
    global _last_warning
    i = bisect.bisect_left(LATENCY_BUCKETS, seconds)  # the first bound >= seconds
    le = LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else math.inf
    try:
        conn.execute(RECORD_LATENCY, (method, route, status, le, seconds))
    except sqlite3.Error as exc:
        if time.monotonic() - _last_warning > WARN_EVERY_SECONDS:
            _last_warning = time.monotonic()
            log.warning("request latency not recorded: %s", exc)


class LatencyCollector(Collector):
    """The request-latency histogram, summed over every worker from the shared table."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path

    def describe(self) -> Iterator[HistogramMetricFamily]:
        return iter([self._family()])

    def collect(self) -> Iterator[HistogramMetricFamily]:
        rows = db.connect(self.db_path).execute(
            "SELECT method, route, status, le, count, seconds FROM request_latency"
        )
        per_labels: defaultdict[tuple[str, ...], list[tuple[float, int, float]]] = defaultdict(list)
        for method, route, status, le, count, seconds in rows:
            per_labels[(method, route, status)].append((le, count, seconds))
        family = self._family()
        for labels, cells in sorted(per_labels.items()):
            buckets = [
                (floatToGoString(bound), sum(n for le, n, _ in cells if le <= bound))
                for bound in (*LATENCY_BUCKETS, math.inf)
            ]
            family.add_metric(labels, buckets, sum_value=sum(s for _, _, s in cells))
        yield family

    @staticmethod
    def _family() -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "mock_issuer_request_duration_seconds",
            "Time to answer an HTTP request, by method, route and status: every worker's"
            " requests since the database was created.",
            labels=list(LATENCY_LABELS),
        )


def metrics_db_path(db_path: str) -> str:
    """The latency file next to the issuer's database: `x.db` -> `x.metrics.db`."""
    path = Path(db_path)
    return str(path.with_name(f"{path.stem}.metrics.db"))


def init_metrics_db(path: str) -> None:
    """Create the latency file in WAL mode with its table; safe from several workers at once."""
    db.open_wal(path).execute(LATENCY_TABLE)


def init_app(app: Flask) -> None:
    """Add `/metrics` and time every request into the shared latency histogram file."""
    db_path = app.extensions["settings"].mock_issuer_db
    latency_path = metrics_db_path(db_path)
    init_metrics_db(latency_path)
    app.extensions["metrics_db"] = latency_path
    registry = CollectorRegistry(auto_describe=True)
    registry.register(UsageCollector(db_path))
    registry.register(LatencyCollector(latency_path))

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            # The route pattern, not the path: bounded label values whatever ids are requested.
            route = request.url_rule.rule if request.url_rule else "unmatched"
            elapsed = time.perf_counter() - started
            method, status = method_label(request.method), status_label(response.status_code)
            record_latency(db.connect(latency_path), method, route, status, elapsed)
        return response

    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])


# ---- label values: each from a fixed small set, whatever a client sends ----

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
KNOWN_STATUSES = frozenset(str(status.value) for status in HTTPStatus)


def method_label(method: str) -> str:
    """The request method, or "other" for a made-up one: each distinct label value is a new
    series kept forever in the metrics file, so a client must not be able to mint them."""
    return method if method in KNOWN_METHODS else "other"


def status_label(status_code: int) -> str:
    """The response status, or "other" for a code outside the HTTP registry."""
    status = str(status_code)
    return status if status in KNOWN_STATUSES else "other"
