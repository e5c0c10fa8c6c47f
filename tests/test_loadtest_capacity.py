"""The capacity finder against a capacity known in advance, and its step arithmetic.

Known capacity: every opaque verification waits a fixed delay injected at the issuer, and the
stack's receiver has a known number of sync gunicorn workers (one request each at a time; the
issuer has as many, each also held for the delay), so at most workers / delay verifications a
second can complete. The finder's answer must land within 25 % of that.
"""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from loadtest.capacity import StepConfig, find_capacity
from loadtest.capacity_steps import StepPlan, Window, judge_step
from loadtest.stack import Stack, clean_env
from tests.faults_client import IssuerFaults

RECEIVER_WORKERS = 2
DELAY_MS = 100
# Short steps (3 s, the first 0.75 s not measured) so the test takes ~20 s; 2 req/s per user.
STEPS = StepConfig(start_rps=8, step_rps=3, step_s=3, max_steps=8, user_rps=2, p95_ms=1000)


@pytest.mark.e2e
@pytest.mark.load
def test_the_finder_lands_within_25_percent_of_a_known_capacity(tmp_path):
    expected_rps = RECEIVER_WORKERS / (DELAY_MS / 1000)
    with Stack(tmp_path / "stack", workers=RECEIVER_WORKERS) as stack:
        faults = IssuerFaults(stack.servers["issuer"].url, stack.seed.instance_secret_key)
        faults.set("POST /m2m_tokens/verify", delay_seconds=DELAY_MS / 1000)
        env = {**clean_env(), **stack.locust_env()}
        [result] = find_capacity(["opaque"], env, STEPS, tmp_path / "reports")

    assert result.exit_code == 0, result
    assert result.capacity_rps is not None, result.steps
    assert abs(result.capacity_rps - expected_rps) / expected_rps <= 0.25, (expected_rps, result)
    assert not result.steps[-1]["passed"]  # it stopped at the first step that broke the limits
    assert all(step["passed"] for step in result.steps[:-1])
    with (tmp_path / "reports" / "capacity.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[1][:2] == ["opaque, issuer asked every time", f"{result.capacity_rps:.1f}"]
    assert f"| {result.capacity_rps:.1f} |" in (tmp_path / "reports" / "capacity.md").read_text()
    assert (tmp_path / "reports" / "capacity.svg").read_text().startswith("<svg")


PLAN = StepPlan(
    start_rps=10, step_rps=10, step_s=8, max_steps=5, user_rps=4, p95_ms=100, max_fail_ratio=0.01
)


def window(requests: int, failures: int = 0, ms: int = 10) -> Window:
    return Window(requests, failures, Counter({ms: requests}))


def test_a_step_offers_users_times_their_rate_and_skips_its_warm_up():
    assert [PLAN.offered_rps(i) for i in range(3)] == [10, 20, 30]
    assert [PLAN.users(i) for i in range(3)] == [3, 5, 8]  # ceil(offered / 4 per user)
    assert PLAN.warmup_s == 2


def test_a_step_passes_only_within_every_limit():
    ok = judge_step(PLAN, 1, window(0), window(120), seconds=6)
    assert ok.passed and ok.achieved_rps == 20 and ok.p95_ms == 10
    slow = judge_step(PLAN, 1, window(0), window(120, ms=150), seconds=6)
    assert not slow.passed and slow.reason == "p95 150 ms > 100 ms"
    failing = judge_step(PLAN, 1, window(0), window(120, failures=3), seconds=6)
    assert failing.reason == "failure ratio 2.50% > 1.00%"
    not_sustained = judge_step(PLAN, 1, window(0), window(100), seconds=6)
    assert not_sustained.reason == "achieved 16.7 req/s < 90% of offered"


def test_a_step_is_measured_between_its_two_snapshots_only():
    before = Window(500, 5, Counter({900: 500}))  # an earlier, slow and failing step
    after = Window(620, 5, Counter({900: 500, 10: 120}))
    step = judge_step(PLAN, 1, before, after, seconds=6)
    assert step.passed and step.requests == 120 and step.p95_ms == 10 and step.fail_ratio == 0
