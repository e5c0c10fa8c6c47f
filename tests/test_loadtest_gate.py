"""The load test's gate, target guard and rotation plan, without running Locust.

Locust itself is not imported here (importing it monkey-patches the whole test process); the
stats objects below carry the same attributes the gate reads from Locust's `StatsEntry`. The
real Locust stats go through the gate in tests/test_loadtest_smoke.py.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field

import configargparse
import pytest

from loadtest.gate import Thresholds, evaluate, parse_limits
from loadtest.rotation_plan import (
    check_both_keys_verified,
    check_no_jwt_failures,
    planned_users,
)
from loadtest.settings import (
    Option,
    TargetRefused,
    check_targets,
    describe_targets,
    is_loopback_url,
)


@dataclass
class Entry:
    """A request name's numbers, shaped like locust.stats.StatsEntry."""

    name: str
    times_ms: list[float]
    num_failures: int = 0
    method: str = "POST"

    @property
    def num_requests(self) -> int:
        return len(self.times_ms)

    @property
    def fail_ratio(self) -> float:
        return self.num_failures / self.num_requests if self.num_requests else 0.0

    def get_response_time_percentile(self, percent: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(percent * len(ordered)) - 1)] if ordered else 0


@dataclass
class Stats:
    entries_list: list[Entry] = field(default_factory=list)

    @property
    def entries(self) -> dict:
        return {(e.name, e.method): e for e in self.entries_list}

    @property
    def total(self) -> Entry:
        times = [t for e in self.entries_list for t in e.times_ms]
        return Entry("Aggregated", times, sum(e.num_failures for e in self.entries_list))


def fast(name: str, n: int = 100, failures: int = 0, ms: float = 5) -> Entry:
    return Entry(name, [ms] * n, failures)


def test_run_within_limits_passes_with_one_pass_line():
    stats = Stats([fast("/receive (opaque)"), fast("/send (jwt)", n=50)])
    verdict = evaluate(stats, Thresholds(max_fail_ratio=0, p95_ms=100))
    assert verdict.passed and verdict.exit_code == 0
    assert verdict.line().startswith("LOADTEST PASS: 150 requests over 2 names, 0 failed")
    assert "\n" not in verdict.line()


def test_a_single_failure_breaks_a_zero_failure_limit_and_names_the_request():
    stats = Stats([fast("/receive (opaque)"), fast("/receive (jwt start kid=k1)", failures=1)])
    verdict = evaluate(stats, Thresholds(max_fail_ratio=0, p95_ms=100))
    assert not verdict.passed and verdict.exit_code == 1
    assert verdict.line().startswith(
        "LOADTEST FAIL: POST /receive (jwt start kid=k1) failure ratio 1.00% > 0.00% (1/100)"
    )


def test_p95_above_its_limit_fails_even_without_failures():
    slow = Entry("/send (opaque)", [10] * 90 + [900] * 10)
    verdict = evaluate(Stats([slow]), Thresholds(p95_ms=500))
    assert verdict.breaches == ["POST /send (opaque) p95 900 ms > 500 ms"]


def test_per_name_override_applies_first_matching_pattern_only():
    thresholds = Thresholds(
        p95_ms=100,
        p95_ms_by_name=parse_limits("/send (*=1000;/send (jwt)=1", "--p95-ms-by-name"),
        fail_ratio_by_name=parse_limits("/receive 401 *=0.5", "--fail-ratio-by-name"),
    )
    stats = Stats([fast("/send (jwt)", ms=600), fast("/receive 401 (garbage)", failures=40)])
    assert evaluate(stats, thresholds).passed
    assert thresholds.p95_ms_for("/receive (opaque)") == 100


def test_setup_calls_are_judged_on_failures_but_not_on_latency():
    slow_setup = Entry("prepare tokens", [2500], method="SETUP")
    assert evaluate(Stats([fast("/receive (opaque)"), slow_setup]), Thresholds(p95_ms=100)).passed
    failed_setup = Entry("prepare tokens", [5], num_failures=1, method="SETUP")
    verdict = evaluate(Stats([fast("/receive (opaque)"), failed_setup]), Thresholds())
    assert verdict.breaches == ["SETUP prepare tokens failure ratio 100.00% > 0.00% (1/1)"]


def test_a_run_without_requests_fails():
    verdict = evaluate(Stats(), Thresholds())
    assert not verdict.passed and "no requests were made" in verdict.line()


def test_an_extra_check_message_fails_the_gate():
    verdict = evaluate(Stats([fast("/receive (opaque)")]), Thresholds(), [lambda _s: "broken"])
    assert verdict.breaches == ["broken"]


@pytest.mark.parametrize("text", ["/send", "=5", "/send=fast"])
def test_malformed_per_name_limits_are_refused_naming_the_option(text):
    with pytest.raises(ValueError, match="--p95-ms-by-name"):
        parse_limits(text, "--p95-ms-by-name")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8780", "http://localhost:1", "http://[::1]:80", "http://127.9.9.9"]
)
def test_loopback_targets_are_accepted(url):
    assert is_loopback_url(url)
    check_targets({"issuer-url": url})


@pytest.mark.parametrize(
    "url",
    [
        "https://staging.example.com",
        "http://10.1.2.3",
        "http://[::ffff:10.0.0.1]",
        "http://0.0.0.0",
    ],
)
def test_non_loopback_target_needs_the_remote_acknowledgement(url):
    with pytest.raises(TargetRefused, match="is not a loopback address") as refused:
        check_targets({"receiver-url": url})
    message = str(refused.value)
    assert "--allow-remote" in message and "LOADTEST_ALLOW_REMOTE=1" in message
    check_targets({"receiver-url": url}, allow_remote=True)


def test_the_remote_acknowledgement_does_not_accept_a_malformed_target():
    with pytest.raises(TargetRefused, match="not an http"):
        check_targets({"caller-url": "file:///etc/passwd"}, allow_remote=True)


def test_the_resolved_targets_are_described_as_loopback_or_remote():
    line = describe_targets(
        {"issuer-url": "http://127.0.0.1:1", "receiver-url": "https://10.0.0.9"}
    )
    assert line == (
        "loadtest: targets: issuer-url=http://127.0.0.1:1 (loopback), "
        "receiver-url=https://10.0.0.9 (REMOTE)"
    )


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False)])
def test_the_allow_remote_flag_is_also_an_environment_variable(value, expected, monkeypatch):
    parser = configargparse.ArgumentParser()
    Option("--allow-remote", "LOADTEST_ALLOW_REMOTE", False, "").add_to(parser)
    monkeypatch.setenv("LOADTEST_ALLOW_REMOTE", value)
    assert parser.parse_args([]).allow_remote is expected
    assert parser.parse_args(["--allow-remote"]).allow_remote is True


def test_a_name_that_resolves_somewhere_is_not_trusted_as_loopback():
    assert not is_loopback_url("http://127.0.0.1.nip.io:8780")


def test_localhost_is_refused_when_it_resolves_to_a_non_loopback_address(monkeypatch):
    def resolves_elsewhere(host, *_args, **_kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolves_elsewhere)
    with pytest.raises(TargetRefused, match="is not a loopback address"):
        check_targets({"issuer-url": "http://localhost:8780"})


def test_non_http_target_is_refused():
    with pytest.raises(TargetRefused, match="not an http"):
        check_targets({"caller-url": "ftp://127.0.0.1"})


def test_rotation_plan_ramps_spikes_and_settles_within_the_peak():
    users = [planned_users(i / 100, peak=20) for i in range(100)]
    assert users[0] == 1 and users[24] == 10  # ramp to half the peak
    assert users[30] == 10 and users[45] == 20 and users[70] == 10  # hold, spike, settle
    assert max(users) == 20 and users == sorted(users[:25]) + users[25:]


def test_rotation_needs_successful_jwts_from_two_keys_and_no_jwt_failure():
    one_key = Stats([fast("/receive (jwt start kid=k1)"), fast("/receive (jwt fresh kid=k1)")])
    assert "only 1 signing key" in check_both_keys_verified(one_key)
    new_key_failed = Stats(
        [fast("/receive (jwt start kid=k1)"), fast("/receive (jwt fresh kid=k2)", 3, failures=3)]
    )
    assert "only 1 signing key" in check_both_keys_verified(new_key_failed)
    assert check_no_jwt_failures(new_key_failed) == (
        "3 JWT verifications failed around the key rotation"
    )
    both = Stats([fast("/receive (jwt start kid=k1)"), fast("/receive (jwt fresh kid=k2)")])
    assert check_both_keys_verified(both) is None and check_no_jwt_failures(both) is None
