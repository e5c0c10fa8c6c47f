"""`GET /metrics` in Prometheus text format (prometheus-client).

Token counters are read from the usage table at scrape time (a custom collector), so they are
the same whichever gunicorn worker answers the scrape and survive restarts; each process keeps a
running total and reads only the records added since its previous scrape. The request-latency
histogram is kept in memory, so under gunicorn each worker reports only its own requests.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from . import db, usage
from .dashboard_queries import CountKey, counts_between_ids, last_usage_id

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class UsageCollector(Collector):
    """Creation and verification counters computed from the issuer's usage records.

    The first scrape counts the whole table; later ones add only the records appended since
    (an id range scan), so a scrape stays cheap however long the issuer has run.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._last_id = 0
        self._counts: Counter[CountKey] = Counter()

    def _current_counts(self) -> Counter[CountKey]:
        conn = db.connect(self.db_path)
        with self._lock:
            newest = last_usage_id(conn)
            if newest < self._last_id:  # the database was replaced: start again
                self._last_id, self._counts = 0, Counter()
            if newest > self._last_id:
                self._counts += counts_between_ids(conn, self._last_id, newest)
                self._last_id = newest
            return Counter(self._counts)

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
            "M2M tokens minted, by token format.",
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


def init_app(app: Flask) -> None:
    """Add `/metrics` and time every request into a latency histogram (per process)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(UsageCollector(app.config["MOCK_ISSUER_DB"]))
    latency = Histogram(
        "mock_issuer_request_duration_seconds",
        "Time to answer an HTTP request, by method, route and status (this process only).",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            # The route pattern, not the path: bounded label values whatever ids are requested.
            route = request.url_rule.rule if request.url_rule else "unmatched"
            latency.labels(request.method, route, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response

    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
