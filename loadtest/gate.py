"""The pass/fail gate: failure ratio and p95 latency limits per request name, one verdict line.

Applied once when a Locust run ends (on the master in distributed mode); the verdict becomes the
process exit code, so a CI job or a shell script can trust `$?`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing locust monkey-patches the process; this module stays importable
    from locust.stats import RequestStats, StatsEntry

# Request type of the setup calls (token preparation): judged on failures, not on latency.
SETUP_METHOD = "SETUP"

# A further check on the final stats: returns a breach message, or None when satisfied.
GateCheck = Callable[["RequestStats"], "str | None"]


def parse_limits(text: str | None, option: str) -> tuple[tuple[str, float], ...]:
    """Parse `PATTERN=LIMIT;PATTERN=LIMIT` (fnmatch patterns on the request name)."""
    limits: list[tuple[str, float]] = []
    for item in (text or "").split(";"):
        if not item.strip():
            continue
        pattern, sep, value = item.rpartition("=")
        try:
            if not sep or not pattern.strip():
                raise ValueError
            limits.append((pattern.strip(), float(value)))
        except ValueError:
            raise ValueError(f"{option}: expected PATTERN=NUMBER, got {item.strip()!r}") from None
    return tuple(limits)


@dataclass(frozen=True)
class Thresholds:
    """Default limits plus per-name overrides; the first matching override wins."""

    max_fail_ratio: float = 0.0
    p95_ms: float = 1000.0
    fail_ratio_by_name: tuple[tuple[str, float], ...] = ()
    p95_ms_by_name: tuple[tuple[str, float], ...] = ()

    def fail_ratio_for(self, name: str) -> float:
        return _first_match(self.fail_ratio_by_name, name, self.max_fail_ratio)

    def p95_ms_for(self, name: str) -> float:
        return _first_match(self.p95_ms_by_name, name, self.p95_ms)


def _first_match(limits: tuple[tuple[str, float], ...], name: str, default: float) -> float:
    for pattern, limit in limits:
        if fnmatchcase(name, pattern):
            return limit
    return default


@dataclass(frozen=True)
class Verdict:
    passed: bool
    summary: str
    breaches: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def line(self) -> str:
        """The one line a user reads to know whether the run passed."""
        if self.passed:
            return f"LOADTEST PASS: {self.summary}"
        return f"LOADTEST FAIL: {'; '.join(self.breaches)} ({self.summary})"


def _label(entry: StatsEntry) -> str:
    return f"{entry.method} {entry.name}"


def entry_breaches(entry: StatsEntry, thresholds: Thresholds) -> list[str]:
    """The limits this request name broke, each as a short sentence."""
    breaches = []
    ratio_limit = thresholds.fail_ratio_for(entry.name)
    if entry.fail_ratio > ratio_limit:
        breaches.append(
            f"{_label(entry)} failure ratio {entry.fail_ratio:.2%} > {ratio_limit:.2%} "
            f"({entry.num_failures}/{entry.num_requests})"
        )
    if entry.method == SETUP_METHOD:
        return breaches
    p95_limit = thresholds.p95_ms_for(entry.name)
    p95 = entry.get_response_time_percentile(0.95) if entry.num_requests else 0
    if p95 > p95_limit:
        breaches.append(f"{_label(entry)} p95 {p95:g} ms > {p95_limit:g} ms")
    return breaches


def evaluate(
    stats: RequestStats, thresholds: Thresholds, checks: Iterable[GateCheck] = ()
) -> Verdict:
    """Judge a finished run: every request name against its limits, then the extra checks."""
    entries = sorted(stats.entries.values(), key=lambda e: (e.name, e.method))
    total = stats.total
    breaches: list[str] = []
    if total.num_requests == 0:
        breaches.append("no requests were made")
    for entry in entries:
        breaches.extend(entry_breaches(entry, thresholds))
    for check in checks:
        message = check(stats)
        if message:
            breaches.append(message)
    timed = [e for e in entries if e.method != SETUP_METHOD]
    worst = max(timed, key=lambda e: e.get_response_time_percentile(0.95), default=None)
    worst_text = (
        f", worst p95 {worst.get_response_time_percentile(0.95):g} ms ({_label(worst)})"
        if worst
        else ""
    )
    summary = (
        f"{total.num_requests} requests over {len(entries)} names, "
        f"{total.num_failures} failed ({total.fail_ratio:.2%}){worst_text}; "
        f"limits: failure ratio <= {thresholds.max_fail_ratio:.2%}, "
        f"p95 <= {thresholds.p95_ms:g} ms, {len(thresholds.fail_ratio_by_name)} + "
        f"{len(thresholds.p95_ms_by_name)} per-name overrides"
    )
    return Verdict(passed=not breaches, summary=summary, breaches=breaches)
