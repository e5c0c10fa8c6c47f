"""What the receiver saw during a run: its `/metrics` verification-latency histogram, scraped at
the start and at the end, next to Locust's client-side latency for the same token format.

Server-side percentiles come from histogram buckets, so they are bucket upper bounds ("<= 5 ms");
the client-side ones add the network, HTTP handling and Locust's own scheduling.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families

HISTOGRAM = "receiver_verification_seconds"
FORMATS = ("opaque", "jwt")

# format -> {bucket upper bound in seconds: cumulative count}
Buckets = dict[str, dict[float, float]]


def scrape(receiver_url: str, verify: bool | str = True, timeout_s: float = 5) -> Buckets | None:
    """The receiver's latency histogram, or None when its /metrics is not reachable or has none."""
    try:
        response = requests.get(
            f"{receiver_url.rstrip('/')}/metrics", timeout=timeout_s, verify=verify
        )
        if response.status_code != 200:
            return None
        families = list(text_string_to_metric_families(response.text))
    except (requests.RequestException, ValueError):
        return None
    buckets: Buckets = {}
    for family in families:
        for sample in family.samples:
            if sample.name == f"{HISTOGRAM}_bucket":
                le = float(sample.labels["le"])
                buckets.setdefault(sample.labels.get("format", ""), {})[le] = sample.value
    return buckets or None


def since(before: Buckets | None, after: Buckets) -> Buckets:
    """The run's own histogram: the end scrape minus the start scrape."""
    before = before or {}
    return {
        fmt: {le: count - before.get(fmt, {}).get(le, 0.0) for le, count in bounds.items()}
        for fmt, bounds in after.items()
    }


def bucket_percentile(bounds: Mapping[float, float], q: float) -> float | None:
    """Upper bound (seconds) of the bucket holding the q-quantile; None without observations."""
    total = bounds.get(math.inf, 0.0)
    if total <= 0:
        return None
    for le in sorted(bounds):
        if bounds[le] >= q * total:
            return le
    return math.inf


def count_percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (ms) of Locust's response-time counts {rounded ms: requests}."""
    total = sum(counts.values())
    if not total:
        return None
    seen = 0
    for ms in sorted(counts):
        seen += counts[ms]
        if seen >= q * total:
            return float(ms)
    return float(max(counts))


@dataclass(frozen=True)
class Row:
    format: str
    client_requests: int
    client_p50_ms: float | None
    client_p95_ms: float | None
    server_count: int
    server_p50_ms: float | None
    server_p95_ms: float | None


def client_counts(entries: Iterable, token_format: str) -> Counter[int]:
    """Merged response-time counts of the `/receive (<format> ...)` request names."""
    merged: Counter[int] = Counter()
    for entry in entries:
        if entry.name.startswith(f"/receive ({token_format}"):
            merged.update(entry.response_times)
    return merged


def rows(server: Buckets, entries: list) -> list[Row]:
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else seconds * 1000

    found = []
    for fmt in FORMATS:
        counts = client_counts(entries, fmt)
        bounds = server.get(fmt, {})
        if not counts and not bounds.get(math.inf):
            continue
        found.append(
            Row(
                fmt,
                counts.total(),
                count_percentile(counts, 0.5),
                count_percentile(counts, 0.95),
                int(bounds.get(math.inf, 0)),
                ms(bucket_percentile(bounds, 0.5)),
                ms(bucket_percentile(bounds, 0.95)),
            )
        )
    return found


def markdown(table: list[Row]) -> str:
    def cell(value: float | None, bound: bool = False) -> str:
        if value is None:
            return "-"
        return ("<= " if bound else "") + f"{value:g}"

    lines = [
        "| format | Locust /receive requests | client p50 ms | client p95 ms "
        "| receiver verifications (all callers) | server p50 ms | server p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r.format} | {r.client_requests} | {cell(r.client_p50_ms)} | "
            f"{cell(r.client_p95_ms)} | {r.server_count} | {cell(r.server_p50_ms, True)} | "
            f"{cell(r.server_p95_ms, True)} |"
        )
    return "\n".join(lines)
