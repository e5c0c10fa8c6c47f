"""How many requests per second one Locust worker process (FastHttpUser) produces against the
receiver here, to size distributed runs: workers needed = target rate / this figure.

Starts the throwaway stack with a receiver whose verification cache is on (the cheapest
verification, so the receiver limits the run as little as possible), runs ONE Locust process of
OpaqueVerifyUser with no wait time, and reads that process's CPU time (psutil):

    python -m loadtest.worker_rate --users 40 --seconds 20

It prints the achieved req/s, the Locust process's share of one core, and req/s per full core
(achieved / share): the figure for a worker that has a core to itself.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from loadtest.stack import REPO_ROOT, Stack, clean_env

FILES = "loadtest/locustfile.py,loadtest/capacity_shape.py"  # the shape file paces users


def measure(users: int, seconds: int, workers: int) -> tuple[float, float]:
    """(requests per second, CPU share of one core used by the Locust process)."""
    with (
        tempfile.TemporaryDirectory(prefix="m2m-worker-rate-") as tmp,
        Stack(Path(tmp), workers=workers) as stack,
    ):
        cached = stack.receiver_server({"M2M_VERIFY_CACHE_SECONDS": "300"})
        stack.servers["cached-receiver"] = cached
        cached.start()
        cached.wait_healthy()
        env = {**clean_env(), **stack.locust_env(), "LOADTEST_RECEIVER_URL": cached.url}
        prefix = Path(tmp) / "rate"
        # A flat run: one step held for the whole time, users with no pacing to speak of.
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            FILES,
            "OpaqueVerifyUser",
            "--headless",
            "--only-summary",
            "-t",
            f"{seconds + 5}s",
            "--csv",
            str(prefix),
            "--step-rps-start",
            str(users * 1000),
            "--step-rps",
            "0",
            "--step-s",
            str(seconds),
            "--max-steps",
            "1",
            "--user-rps",
            "1000",
            "--p95-ms",
            "100000",
        ]
        process = psutil.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL)
        started = time.monotonic()
        cpu = 0.0
        while process.poll() is None and time.monotonic() - started < seconds + 60:
            times = process.cpu_times()
            cpu = times.user + times.system
            time.sleep(0.5)
        wall = time.monotonic() - started
        with Path(f"{prefix}_stats.csv").open() as f:
            rows = {row["Name"]: row for row in csv.DictReader(f)}
        rate = float(rows["/receive (opaque)"]["Requests/s"])
        return rate, cpu / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app")
    args = parser.parse_args(argv)
    rate, share = measure(args.users, args.seconds, args.workers)
    per_core = rate / share if share > 0 else float("nan")
    print(
        f"one Locust process, {args.users} FastHttpUsers, {args.seconds} s: {rate:.0f} req/s "
        f"at {share:.0%} of one core = {per_core:.0f} req/s per full core "
        f"({psutil.cpu_count()} cores, load average {psutil.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
