"""The capacity finder's arithmetic, without Locust: the step plan and the judgement of one step
from two cumulative snapshots of the stats."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

# A step is sustained when it achieved at least this share of the offered rate.
SUSTAINED_SHARE = 0.9
MAX_WARMUP_S = 5.0


@dataclass(frozen=True)
class StepPlan:
    start_rps: float
    step_rps: float
    step_s: float
    max_steps: int
    user_rps: float
    p95_ms: float
    max_fail_ratio: float

    @property
    def warmup_s(self) -> float:
        """The start of each step that is not measured: users spawn and queues settle."""
        return min(MAX_WARMUP_S, self.step_s / 4)

    def offered_rps(self, index: int) -> float:
        return self.start_rps + index * self.step_rps

    def users(self, index: int) -> int:
        return max(1, math.ceil(self.offered_rps(index) / self.user_rps - 1e-9))


@dataclass(frozen=True)
class Window:
    """Cumulative totals at one moment: requests, failures, response times {ms: count}."""

    requests: int
    failures: int
    response_times: Counter


@dataclass(frozen=True)
class Step:
    index: int
    offered_rps: float
    users: int
    achieved_rps: float
    requests: int
    p95_ms: float
    fail_ratio: float
    passed: bool
    reason: str


def p95_of(counts: Counter) -> float:
    total = sum(counts.values())
    seen = 0
    for ms in sorted(counts):
        seen += counts[ms]
        if seen >= 0.95 * total:
            return float(ms)
    return 0.0


def judge_step(plan: StepPlan, index: int, before: Window, after: Window, seconds: float) -> Step:
    """The step's achieved rate, p95 and failure ratio over its measured window, and whether it
    met the limits (p95, failure ratio, and at least SUSTAINED_SHARE of the offered rate)."""
    requests = after.requests - before.requests
    failures = after.failures - before.failures
    counts = after.response_times - before.response_times
    achieved = requests / seconds if seconds > 0 else 0.0
    p95 = p95_of(counts)
    ratio = failures / requests if requests else 0.0
    offered = plan.offered_rps(index)
    reasons = []
    if p95 > plan.p95_ms:
        reasons.append(f"p95 {p95:g} ms > {plan.p95_ms:g} ms")
    if ratio > plan.max_fail_ratio:
        reasons.append(f"failure ratio {ratio:.2%} > {plan.max_fail_ratio:.2%}")
    if achieved < SUSTAINED_SHARE * offered:
        reasons.append(f"achieved {achieved:.1f} req/s < {SUSTAINED_SHARE:.0%} of offered")
    return Step(
        index=index,
        offered_rps=offered,
        users=plan.users(index),
        achieved_rps=round(achieved, 2),
        requests=requests,
        p95_ms=p95,
        fail_ratio=round(ratio, 4),
        passed=not reasons,
        reason="; ".join(reasons) or "met the limits",
    )
