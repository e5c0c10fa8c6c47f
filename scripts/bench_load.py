"""A bounded closed-loop load generator for the benchmark: N greenlets send back-to-back requests
for a fixed time (or a fixed count) over keep-alive connections and record each latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from geventhttpclient import HTTPClient


@dataclass(frozen=True)
class Target:
    """One kind of request: where, what, and which status counts as a success."""

    base_url: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200

    def client(self, concurrency: int) -> HTTPClient:
        return HTTPClient.from_url(
            self.base_url, concurrency=concurrency, connection_timeout=5, network_timeout=10
        )


@dataclass
class Sample:
    """Requests answered with the expected status, failures, wall time and latencies (seconds)."""

    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else 0.0
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(p) - 1] * 1000


def send(client: HTTPClient, target: Target) -> bool:
    """One request; True when it got the expected status (errors never raise)."""
    try:
        response = client.request(target.method, target.path, target.body, target.headers)
        response.read()
        return response.status_code == target.expect
    except (OSError, gevent.Timeout, ValueError):
        return False


def closed_loop(
    step: Callable[[], bool],
    concurrency: int,
    *,
    seconds: float | None = None,
    count: int | None = None,
) -> Sample:
    """Run `step` from `concurrency` greenlets until `seconds` pass or `count` steps are done."""
    if (seconds is None) == (count is None):
        raise ValueError("give exactly one of seconds or count")
    sample = Sample()
    remaining = [count or 0]
    deadline = time.perf_counter() + (seconds or 0)

    def more() -> bool:
        if count is None:
            return time.perf_counter() < deadline
        remaining[0] -= 1
        return remaining[0] >= 0

    def worker() -> None:
        while more():
            began = time.perf_counter()
            ok = step()
            sample.latencies.append(time.perf_counter() - began)
            if ok:
                sample.ok += 1
            else:
                sample.errors += 1

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)])
    sample.seconds = time.perf_counter() - started
    return sample


def measure(target: Target, concurrency: int, seconds: float) -> Sample:
    """Closed-loop load on one target for `seconds`."""
    client = target.client(concurrency)
    try:
        return closed_loop(lambda: send(client, target), concurrency, seconds=seconds)
    finally:
        client.close()
