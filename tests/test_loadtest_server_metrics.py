"""The server-side half of the load-test report: the receiver's histogram, taken for this run
only (end minus start), read as bucket upper bounds next to Locust's own percentiles."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from loadtest.server_metrics import bucket_percentile, count_percentile, markdown, rows, since


@dataclass
class Entry:
    name: str
    response_times: Counter = field(default_factory=Counter)


def test_the_run_histogram_is_the_end_scrape_minus_the_start_scrape():
    before = {"opaque": {0.005: 10.0, 0.05: 10.0, math.inf: 10.0}}
    after = {"opaque": {0.005: 15.0, 0.05: 28.0, math.inf: 30.0}, "jwt": {0.001: 4, math.inf: 4}}
    run = since(before, after)
    assert run == {"opaque": {0.005: 5, 0.05: 18, math.inf: 20}, "jwt": {0.001: 4, math.inf: 4}}
    assert bucket_percentile(run["opaque"], 0.5) == 0.05  # 5 of 20 under 5 ms, 18 under 50 ms
    assert bucket_percentile(run["opaque"], 0.95) == math.inf  # 2 of 20 above the last bound
    assert bucket_percentile({math.inf: 0}, 0.5) is None


def test_client_and_server_percentiles_share_one_row_per_token_format():
    entries = [
        Entry("/receive (opaque)", Counter({4: 90, 40: 10})),
        Entry("/receive (jwt start kid=a)", Counter({2: 10})),
        Entry("/receive (jwt fresh kid=b)", Counter({3: 10})),
        Entry("/send (opaque)", Counter({900: 50})),  # not a receiver request: left out
    ]
    server = {"opaque": {0.005: 95, math.inf: 100}, "jwt": {0.001: 20, math.inf: 20}}
    table = rows(server, entries)
    assert [(r.format, r.client_requests, r.client_p50_ms, r.client_p95_ms) for r in table] == [
        ("opaque", 100, 4.0, 40.0),
        ("jwt", 20, 2.0, 3.0),
    ]
    assert markdown(table).splitlines()[2] == "| opaque | 100 | 4 | 40 | 100 | <= 5 | <= 5 |"
    assert count_percentile(Counter(), 0.5) is None
