"""Locust runs headless against the real stack (issuer, receiver, caller under gunicorn): the
gate's verdict, the exit code and the reports are what a user relies on.

One stack per module; each run is a few seconds with a handful of users, because Locust and the
servers share the machine's two cores.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from loadtest.stack import REPO_ROOT, Stack, clean_env, free_port, master_port_args

pytestmark = [pytest.mark.e2e, pytest.mark.load]

LOCUSTFILE = "loadtest/locustfile.py"
ROTATION_SHAPE = "loadtest/rotation_shape.py"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("loadtest-stack"), workers=2) as running:
        yield running


def run_locust(
    stack: Stack, report_dir: Path, *args: str, files: str = LOCUSTFILE, env: dict | None = None
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "locust",
        "--config",
        "loadtest/locust.conf",
        "-f",
        files,
        "--headless",
        "--csv",
        str(report_dir / "locust"),
        "--html",
        str(report_dir / "report.html"),
        *args,
    ]
    return subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**clean_env(), **stack.locust_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def verdict_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("LOADTEST ")]


def output(result: subprocess.CompletedProcess) -> str:
    """Locust's exit code and the end of its stdout and stderr, for an assertion message."""
    return (
        f"exit code {result.returncode}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}"
    )


def one_verdict(result: subprocess.CompletedProcess) -> str:
    """The single LOADTEST line; fails showing Locust's own output when there is not exactly one."""
    lines = verdict_lines(result)
    assert len(lines) == 1, f"expected one LOADTEST line, got {len(lines)}\n{output(result)}"
    return lines[0]


def stats_rows(report_dir: Path) -> dict[str, dict[str, str]]:
    with (report_dir / "locust_stats.csv").open() as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_smoke_run_passes_the_gate_and_writes_csv_and_html_reports(stack, tmp_path):
    result = run_locust(stack, tmp_path, "-u", "5", "-r", "5", "-t", "5s")

    assert result.returncode == 0, output(result)
    targets = result.stdout.splitlines()[0]  # every run names its resolved targets first
    assert targets.startswith("loadtest: targets: ")
    assert f"receiver-url={stack.servers['receiver'].url} (loopback)" in targets
    verdict = one_verdict(result)
    assert verdict.startswith("LOADTEST PASS: ")
    rows = stats_rows(tmp_path)
    # Every user class ran, and every request, expected 401s included, counted as a success.
    for name in [
        "/v1/m2m_tokens (opaque)",
        "/v1/m2m_tokens (jwt)",
        "/receive (opaque)",
        "/send (opaque)",
        "/send (jwt)",
        "/receive 401 (garbage)",
        "/receive 401 (revoked opaque)",
        "/receive 401 (out-of-scope jwt)",
    ]:
        assert int(rows[name]["Request Count"]) > 0, name
    assert any(name.startswith("/receive (jwt start kid=") for name in rows)
    assert rows["Aggregated"]["Failure Count"] == "0"
    html = (tmp_path / "report.html").read_text()
    assert "/receive (opaque)" in html
    # The receiver's own view (its /metrics) next to Locust's, printed and written as Markdown.
    server_table = (tmp_path / "locust_server_latency.md").read_text()
    assert server_table in result.stdout
    for token_format in ("opaque", "jwt"):
        row = next(row for row in server_table.splitlines() if row.startswith(f"| {token_format} "))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert int(cells[1]) > 0 and int(cells[4]) >= int(cells[1]), row
        assert cells[5].startswith("<= ") and cells[6].startswith("<= "), row


def test_impossible_threshold_fails_the_gate_once_in_distributed_mode(stack, tmp_path):
    # Its own master port: on Locust's default port a concurrent distributed run (another test
    # session on the machine) made this master exit 1 with no verdict. 6 s leaves the workers
    # time to prepare tokens and send requests even on busy cores.
    result = run_locust(
        stack,
        tmp_path,
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "6s",
        "--processes",
        "2",
        *master_port_args(),
        env={"LOADTEST_P95_MS": "0.001"},
    )

    assert result.returncode == 1, output(result)
    verdict = one_verdict(result)  # the master judges; the two workers stay silent
    assert verdict.startswith("LOADTEST FAIL: ")
    assert "ms > 0.001 ms" in verdict
    assert (tmp_path / "locust_stats.csv").exists() and (tmp_path / "report.html").exists()


def test_signing_key_rotation_mid_run_fails_no_jwt_verification(stack, tmp_path):
    result = run_locust(
        stack,
        tmp_path,
        "JwtVerifyUser",
        "OpaqueVerifyUser",
        "-u",
        "4",
        "-t",
        "8s",
        "--jwt-refresh-s",
        "1",
        files=f"{LOCUSTFILE},{ROTATION_SHAPE}",
    )

    verdict = one_verdict(result)
    assert result.returncode == 0 and verdict.startswith("LOADTEST PASS: "), output(result)
    rows = stats_rows(tmp_path)
    assert rows["/v1/jwks/rotate (signing key rotation)"]["Failure Count"] == "0"
    kids = {name.rpartition("kid=")[2] for name in rows if name.startswith("/receive (jwt ")}
    assert len(kids) == 2  # tokens from the old and the new key were both verified


def test_the_stack_receiver_checks_every_jwt_signature(stack):
    """The verified-token memo is off in the running receiver, so the rotation run's old-key
    tokens are verified against the published keys on every request, not served from memory."""
    receiver = psutil.Process(stack.servers["receiver"].process.pid)  # gunicorn's master
    for process in [receiver, *receiver.children()]:
        assert process.environ().get("M2M_JWT_CACHE_SECONDS") == "0"


def test_a_non_loopback_target_is_refused_before_any_traffic(stack, tmp_path):
    result = run_locust(
        stack, tmp_path, "-u", "1", "-t", "2s", env={"LOADTEST_RECEIVER_URL": "http://10.1.2.3"}
    )

    assert result.returncode == 2
    assert "is not a loopback address" in result.stderr and "--allow-remote" in result.stderr
    assert not verdict_lines(result)
    sent = stats_rows(tmp_path) if (tmp_path / "locust_stats.csv").exists() else {}
    assert all(row["Request Count"] == "0" for row in sent.values())


def test_a_run_above_the_old_caps_is_the_users_choice(stack, tmp_path):
    """No cap on users or run time: 250 users asked, spawned at 2/s, so 3 s start only a few."""
    result = run_locust(stack, tmp_path, "OpaqueVerifyUser", "-u", "250", "-r", "2", "-t", "3s")

    assert result.returncode == 0, output(result)
    assert one_verdict(result).startswith("LOADTEST PASS: ")
    assert "above the cap" not in result.stderr


def test_the_web_ui_runs_and_shows_the_gate_verdict_when_the_run_stops(stack, tmp_path):
    """Locust's web UI (on loopback) with --autostart: the Gate tab's data and /gate show the
    verdict once the run stops, and the process exits with it."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        LOCUSTFILE,
        "OpaqueVerifyUser",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "3s",
        "--autostart",
        "--autoquit",
        "4",
        "--web-port",
        str(port),
        "--p95-ms",
        "0.001",
    ]
    with subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**clean_env(), **stack.locust_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            gate = poll_gate(f"http://127.0.0.1:{port}", timeout_s=30)
            stats = requests.get(f"http://127.0.0.1:{port}/stats/requests", timeout=5).json()
            stdout, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
    assert gate["judged"] and not gate["passed"], gate
    assert gate["line"].startswith("LOADTEST FAIL: ") and "ms > 0.001 ms" in gate["line"]
    tab = next(t for t in stats["extendedStats"] if t["key"] == "loadtest-gate")
    assert tab["data"][0]["verdict"] == "FAIL"
    assert process.returncode == 1, f"{stdout[-2000:]}\n{stderr[-2000:]}"
    assert gate["line"] in stdout


def poll_gate(ui_url: str, timeout_s: float) -> dict:
    """`GET /gate` until the run is judged (bounded by `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{ui_url}/gate", timeout=2).json()
            if answer["judged"]:
                return answer
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the web UI at {ui_url} showed no verdict within {timeout_s} s")


def test_a_refused_distributed_run_leaves_no_worker_behind(tmp_path):
    """With --processes the workers are forked before the master refuses; they must not linger
    (Locust's parent leaves them retrying to connect for 5 minutes)."""
    port_args = master_port_args()  # its unique port also names this run's processes below
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            LOCUSTFILE,
            "--headless",
            "-u",
            "2",
            "-t",
            "5s",
            "--processes",
            "2",
            *port_args,
        ],
        cwd=REPO_ROOT,
        env={
            **clean_env(),
            "LOADTEST_CALLER_SECRET_KEY": "ak_unused",
            "LOADTEST_RECEIVER_URL": "http://192.0.2.1:9",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2 and "--allow-remote" in result.stderr, output(result)
    marker = " ".join(port_args[-2:])

    def leftovers() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if marker in " ".join(process.info["cmdline"] or []):
                found.append(process)
        return found

    deadline = time.monotonic() + 5
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)
    stragglers = leftovers()
    for process in stragglers:  # never leave them running, even when the test fails
        process.kill()
    assert not stragglers, output(result)
