"""A distributed load test across hosts that really have their own addresses: Linux network
namespaces for the target (the whole stack), the Locust master and two workers, joined by a
bridge, with addresses that exist only inside them (loadtest/netns.py).

Without root or iproute2 the test skips with the reason; with `M2M_REQUIRE_NETNS=1` (set by
.ci/run) that skip is a failure, so CI cannot pass without running it.
"""

from __future__ import annotations

import csv
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.netns import Lab, NetnsUnavailable, existing_namespaces, unavailable_reason
from loadtest.stack import REPO_ROOT, clean_env

pytestmark = [pytest.mark.e2e, pytest.mark.load]

HOSTS = ["target", "master", "worker1", "worker2"]
FILES = "loadtest/locustfile.py,loadtest/rotation_shape.py"
MASTER_PORT = "5557"  # Locust's default: free, since the master has a namespace of its own
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 90


def no_netns(why: str) -> None:
    """Skip because `why`, or fail when the namespace test is required (CI)."""
    if os.environ.get("M2M_REQUIRE_NETNS", "").strip() == "1":
        pytest.fail(f"M2M_REQUIRE_NETNS=1 but {why}", pytrace=False)
    pytest.skip(f"network-namespace test skipped: {why}")


def read_line(process: subprocess.Popen, timeout_s: float) -> str:
    """The process's first stdout line, waiting at most `timeout_s`."""
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    return process.stdout.readline() if ready else ""


def stats_rows(prefix: Path) -> dict[str, dict[str, str]]:
    with Path(f"{prefix}_stats.csv").open() as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def server_counts(prefix: Path) -> dict[str, tuple[int, int]]:
    """format -> (Locust's /receive requests, the receiver's own count of verifications)."""
    counts = {}
    for line in Path(f"{prefix}_server_latency.md").read_text().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        counts[cells[0]] = (int(cells[1]), int(cells[4]))
    return counts


def locust(lab: Lab, host: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*lab.exec_prefix(host), sys.executable, "-m", "locust", "-f", FILES, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_distributed_run_across_hosts_counts_every_worker_and_rotates_the_key_once(tmp_path):
    reason = unavailable_reason()
    if reason:
        no_netns(reason)
    lab = Lab(HOSTS)
    try:
        lab.create()
    except NetnsUnavailable as exc:
        lab.remove()
        no_netns(str(exc))
    except BaseException:
        lab.remove()
        raise
    processes: list[subprocess.Popen] = []
    try:
        stack = subprocess.Popen(
            [
                *lab.exec_prefix("target"),
                sys.executable,
                "-m",
                "loadtest.netns",
                "serve-stack",
                lab.address("target"),
            ],
            cwd=REPO_ROOT,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "stack.log").open("w"),
            text=True,
        )
        processes.append(stack)
        line = read_line(stack, START_TIMEOUT_S)
        assert line, f"the stack did not start: {(tmp_path / 'stack.log').read_text()[-3000:]}"
        env = {**clean_env(), **json.loads(line), "LOADTEST_ALLOW_REMOTE": "1"}
        master_address = lab.address("master")
        prefix = tmp_path / "locust"
        master = locust(
            lab,
            "master",
            [
                "JwtVerifyUser",
                "OpaqueVerifyUser",
                "--headless",
                "--master",
                "--master-bind-host",
                master_address,
                "--master-bind-port",
                MASTER_PORT,
                "--expect-workers",
                "2",
                "--expect-workers-max-wait",
                "30",
                "-u",
                "4",
                "-r",
                "4",
                "-t",
                "10s",
                "--jwt-refresh-s",
                "1",
                "--only-summary",
                "--csv",
                str(prefix),
            ],
            env,
        )
        processes.append(master)
        worker_args = ["--worker", "--master-host", master_address, "--master-port", MASTER_PORT]
        workers = [locust(lab, host, worker_args, env) for host in ("worker1", "worker2")]
        processes += workers
        out, err = master.communicate(timeout=RUN_TIMEOUT_S)
        worker_outs = [worker.communicate(timeout=30)[0] for worker in workers]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        left = lab.remove()

    assert not left and not existing_namespaces(lab.prefix), f"namespaces left: {left}"
    verdicts = [line for line in out.splitlines() if line.startswith("LOADTEST ")]
    assert master.returncode == 0 and len(verdicts) == 1, f"{out[-3000:]}\n{err[-3000:]}"
    assert verdicts[0].startswith("LOADTEST PASS: ")
    assert not any("LOADTEST " in worker_out for worker_out in worker_outs)  # judged once
    targets = out.splitlines()[0]
    assert targets.startswith("loadtest: targets: ") and "(loopback)" not in targets
    rows = stats_rows(prefix)
    assert rows["prepare tokens"]["Request Count"] == "2"  # each worker minted its own tokens
    assert rows["/v1/jwks/rotate (signing key rotation)"]["Request Count"] == "1"
    # Every worker's requests reached the master's totals: the receiver counted no more
    # verifications than Locust's merged stats, apart from requests in flight at the stop.
    for token_format, (client, server) in server_counts(prefix).items():
        assert client > 0 and client <= server <= client + 8, (token_format, client, server)


def test_a_missing_namespace_facility_skips_or_fails_when_required(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert unavailable_reason() == "creating network namespaces needs root"
    monkeypatch.delenv("M2M_REQUIRE_NETNS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        no_netns(unavailable_reason())
    monkeypatch.setenv("M2M_REQUIRE_NETNS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"M2M_REQUIRE_NETNS=1 but .* needs root"):
        no_netns(unavailable_reason())
