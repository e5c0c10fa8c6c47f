"""`/metrics` under gunicorn with several workers: whichever worker answers a scrape, the
request-latency histogram counts every worker's requests and never goes backwards."""

from __future__ import annotations

import re

import pytest
import requests

from tests.harness import free_port
from tests.seed import CALLER, TEST_SECRET_KEY, issuer_env

pytestmark = pytest.mark.e2e

SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
ROUTE = "/v1/machines/<machine_id>"
WORKERS = 4


def latency_series(text: str, suffix: str) -> dict[str, float]:
    """Samples of mock_issuer_request_duration_seconds<suffix> for GET ROUTE 200, by `le`
    (or "" when the sample has no `le`)."""
    found = {}
    pattern = rf"^mock_issuer_request_duration_seconds{suffix}\{{([^}}]*)\}} (\S+)$"
    for labels, value in re.findall(pattern, text, re.M):
        if f'route="{ROUTE}"' in labels and 'method="GET"' in labels and 'status="200"' in labels:
            le = re.search(r'le="([^"]+)"', labels)
            found[le.group(1) if le else ""] = float(value)
    return found


def test_latency_count_never_drops_and_counts_every_workers_requests(start, tmp_path):
    port = free_port()
    env = issuer_env(tmp_path / "issuer", MOCK_ISSUER_URL=f"http://127.0.0.1:{port}")
    issuer = start("mock_issuer", env, server="gunicorn", workers=WORKERS, port=port)
    made = 0
    counts = []
    for _ in range(8):
        for _ in range(3):  # sync workers close every connection: each request may land anywhere
            resp = requests.get(f"{issuer.url}/v1/machines/{CALLER.id}", headers=SK, timeout=10)
            assert resp.status_code == 200
            made += 1
        text = requests.get(f"{issuer.url}/metrics", timeout=10).text
        count = latency_series(text, "_count").get("", 0)
        buckets = latency_series(text, "_bucket")
        assert buckets.get("+Inf", 0) == count
        assert list(buckets.values()) == sorted(buckets.values())  # cumulative
        counts.append((made, count))
    assert [count for _, count in counts] == [made for made, _ in counts]
    assert latency_series(text, "_sum")[""] > 0
