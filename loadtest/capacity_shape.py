"""The capacity finder's load shape: offered load raised in steps of requests per second, each
held for `--step-s`, until the first step whose p95, failure ratio or achieved rate breaks the
limits. Used by `python -m loadtest.capacity` (one run per verification path), or directly:

    locust -f loadtest/locustfile.py,loadtest/capacity_shape.py OpaqueVerifyUser --headless \\
        --step-rps-start 20 --step-rps 20 --step-s 20 --capacity-out reports/capacity.json

Every user runs at most `--user-rps` tasks a second (Locust's constant_throughput), so a step
offering R req/s runs ceil(R / user-rps) users. The first quarter of each step (at most 5 s) is
warm-up and not measured. The gate's verdict is the finder's: PASS when a step met the limits.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import LoadTestShape, constant_throughput, events

from loadtest import gate
from loadtest.capacity_steps import Step, StepPlan, Window, judge_step
from loadtest.settings import Option

OPTIONS = (
    Option("--step-rps-start", "LOADTEST_STEP_RPS_START", 20.0, "Capacity: first step (req/s)"),
    Option("--step-rps", "LOADTEST_STEP_RPS", 20.0, "Capacity: increase per step (req/s)"),
    Option("--step-s", "LOADTEST_STEP_S", 20.0, "Capacity: how long each step is held (s)"),
    Option("--max-steps", "LOADTEST_MAX_STEPS", 20.0, "Capacity: stop after this many steps"),
    Option("--user-rps", "LOADTEST_USER_RPS", 5.0, "Capacity: most req/s one user sends"),
    Option("--capacity-out", "LOADTEST_CAPACITY_OUT", "", "Capacity: write the steps here (JSON)"),
)


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    for option in OPTIONS:
        option.add_to(parser)


@events.init.add_listener
def pace_users(environment, **_kwargs) -> None:
    """Every user class runs at a fixed most-rate, so users x rate is the offered load (on the
    master and on every worker: each reads --user-rps from its own options)."""
    options = environment.parsed_options
    if options is None:
        return
    for user_class in environment.user_classes:
        user_class.wait_time = constant_throughput(options.user_rps)


def measured(stats) -> Window:
    """Cumulative totals of the traffic being measured (setup calls left out)."""
    counts: Counter[int] = Counter()
    requests = failures = 0
    for entry in stats.entries.values():
        if entry.method == gate.SETUP_METHOD:
            continue
        requests += entry.num_requests
        failures += entry.num_failures
        counts.update(entry.response_times)
    return Window(requests=requests, failures=failures, response_times=counts)


class CapacityStepShape(LoadTestShape):
    """Steps of offered load; stops after the first step that breaks a limit."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[Step] = []
        self._current = -1
        self._start: tuple[float, Window] | None = None
        self._done = False

    def plan(self) -> StepPlan:
        o = self.runner.environment.parsed_options
        return StepPlan(
            start_rps=o.step_rps_start,
            step_rps=o.step_rps,
            step_s=o.step_s,
            max_steps=int(o.max_steps),
            user_rps=o.user_rps,
            p95_ms=o.p95_ms,
            max_fail_ratio=o.max_fail_ratio,
        )

    def tick(self) -> tuple[int, float] | None:
        if self._done:
            return None
        plan = self.plan()
        elapsed = self.get_run_time()
        index = int(elapsed // plan.step_s)
        if index != self._current:
            if self._current >= 0 and self.close_step(plan, elapsed):
                return None
            self._current, self._start = index, None
            if index >= plan.max_steps:
                return self.finish()
        if self._start is None and elapsed - index * plan.step_s >= plan.warmup_s:
            self._start = (elapsed, measured(self.runner.stats))
        users = plan.users(index)
        return users, float(users)

    def close_step(self, plan: StepPlan, elapsed: float) -> bool:
        """Judge the step that just ended; True when the run should stop."""
        if self._start is None:
            return False
        started, before = self._start
        after = measured(self.runner.stats)
        step = judge_step(plan, self._current, before, after, elapsed - started)
        self.steps.append(step)
        self.write()
        if not step.passed:
            self.finish()
            return True
        return False

    def finish(self) -> None:
        self._done = True
        self.write()

    def write(self) -> None:
        out = self.runner.environment.parsed_options.capacity_out
        if out:
            Path(out).write_text(json.dumps([asdict(s) for s in self.steps], indent=1))

    def capacity_rps(self) -> float | None:
        passed = [s.achieved_rps for s in self.steps if s.passed]
        return max(passed) if passed else None

    def judge(self, _stats) -> gate.Verdict:
        """The finder's verdict, in place of the per-name limits (the last step broke them)."""
        capacity = self.capacity_rps()
        broke = next((s for s in self.steps if not s.passed), None)
        found = f"capacity {capacity:.1f} req/s" if capacity is not None else "no capacity"
        ending = (
            f"first broken step: {broke.offered_rps:g} req/s offered, {broke.reason}"
            if broke
            else "no step broke the limits"
        )
        summary = f"{found} over {len(self.steps)} steps; {ending}"
        if capacity is None:
            return gate.Verdict(False, summary, ["no step met the limits"])
        return gate.Verdict(True, summary)
