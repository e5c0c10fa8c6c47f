"""The capacity finder: how many verifications per second each path takes before p95 latency,
failures or the achieved rate break the limits. One stepped Locust run per path
(`capacity_shape.py`), then a table (printed, CSV, Markdown) and an SVG chart in reports/capacity/.

    python -m loadtest.capacity                      # a throwaway local stack
    python -m loadtest.capacity --targets-from-env   # your services: LOADTEST_* as for Locust
    python -m loadtest.capacity --paths opaque,jwt --step-s 30 -- --allow-remote

Paths: opaque (the receiver asks the issuer), opaque-cached (a receiver with its verification cache
on: `--cached-receiver-url` for yours), jwt (local verification), chain (the caller's /send).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from loadtest.stack import REPO_ROOT, Stack, clean_env

PATH_USERS = {
    "opaque": "OpaqueVerifyUser",
    "opaque-cached": "OpaqueVerifyUser",
    "jwt": "JwtVerifyUser",
    "chain": "ChainUser",
}
PATH_TITLES = {
    "opaque": "opaque, issuer asked every time",
    "opaque-cached": "opaque, verification cache on",
    "jwt": "JWT, verified locally",
    "chain": "caller /send, full chain",
}
FILES = "loadtest/locustfile.py,loadtest/capacity_shape.py"


@dataclass(frozen=True)
class StepConfig:
    start_rps: float = 20
    step_rps: float = 20
    step_s: float = 10
    max_steps: int = 15
    user_rps: float = 5
    p95_ms: float = 500
    max_fail_ratio: float = 0.0

    def locust_args(self) -> list[str]:
        return [
            "--step-rps-start",
            f"{self.start_rps:g}",
            "--step-rps",
            f"{self.step_rps:g}",
            "--step-s",
            f"{self.step_s:g}",
            "--max-steps",
            str(self.max_steps),
            "--user-rps",
            f"{self.user_rps:g}",
            "--p95-ms",
            f"{self.p95_ms:g}",
            "--max-fail-ratio",
            f"{self.max_fail_ratio:g}",
        ]

    def run_time_s(self) -> int:
        """Locust's -t: every step, plus a margin for start-up; the shape stops earlier."""
        return int(self.max_steps * self.step_s + 10)


@dataclass(frozen=True)
class PathResult:
    path: str
    capacity_rps: float | None
    steps: list[dict]
    exit_code: int

    @property
    def broken_at(self) -> str:
        broke = next((s for s in self.steps if not s["passed"]), None)
        if broke is None:
            return "none: capacity is at least this (raise --max-steps)"
        return f"{broke['offered_rps']:g} req/s: {broke['reason']}"


def run_path(
    path: str, env: dict[str, str], config: StepConfig, report_dir: Path, extra: list[str]
) -> PathResult:
    """One stepped Locust run for one path; its steps come back through --capacity-out."""
    out = report_dir / f"{path}-steps.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        FILES,
        PATH_USERS[path],
        "--headless",
        "--only-summary",
        "-t",
        f"{config.run_time_s()}s",
        "--capacity-out",
        str(out),
        "--csv",
        str(report_dir / path),
        *config.locust_args(),
        *extra,
    ]
    code = subprocess.call(command, env=env, cwd=REPO_ROOT, timeout=config.run_time_s() + 60)
    steps = json.loads(out.read_text()) if out.exists() else []
    passed = [s["achieved_rps"] for s in steps if s["passed"]]
    return PathResult(path, max(passed) if passed else None, steps, code)


def table_rows(results: list[PathResult]) -> list[list[str]]:
    rows = [["path", "capacity req/s", "steps", "first broken step"]]
    for r in results:
        capacity = f"{r.capacity_rps:.1f}" if r.capacity_rps is not None else "none"
        rows.append([PATH_TITLES[r.path], capacity, str(len(r.steps)), r.broken_at])
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def svg_chart(results: list[PathResult], limits: str) -> str:
    """Achieved req/s per step, one polyline per path, the capacity marked with a dot."""
    width, height, left, bottom, top = 640, 360, 60, 40, 30
    steps = [s for r in results for s in r.steps] or [{"offered_rps": 1, "achieved_rps": 1}]
    top_rps = max(max(s["offered_rps"], s["achieved_rps"]) for s in steps) * 1.1
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]

    def x(rps: float) -> float:
        return left + rps / top_rps * (width - left - 20)

    def y(rps: float) -> float:
        return height - bottom - rps / top_rps * (height - bottom - top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="18" font-size="13">Capacity finder: achieved vs offered '
        f"req/s ({escape(limits)})</text>",
        f'<line x1="{left}" y1="{y(0)}" x2="{width - 20}" y2="{y(0)}" stroke="#000"/>',
        f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="{top}" stroke="#000"/>',
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(top_rps)}" y2="{y(top_rps)}" '
        'stroke="#bbb" stroke-dasharray="4"/>',
        f'<text x="{width - 20}" y="{height - 8}" text-anchor="end">offered req/s '
        f"(max {top_rps / 1.1:.0f})</text>",
        f'<text x="12" y="{top + 10}">achieved</text>',
    ]
    for i, result in enumerate(results):
        colour = colours[i % len(colours)]
        points = " ".join(
            f"{x(s['offered_rps']):.1f},{y(s['achieved_rps']):.1f}" for s in result.steps
        )
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}"/>')
        for s in result.steps:
            fill = colour if s["passed"] else "#fff"
            parts.append(
                f'<circle cx="{x(s["offered_rps"]):.1f}" cy="{y(s["achieved_rps"]):.1f}" '
                f'r="3" fill="{fill}" stroke="{colour}"/>'
            )
        capacity = f"{result.capacity_rps:.1f}" if result.capacity_rps is not None else "none"
        parts.append(
            f'<text x="{left + 10}" y="{top + 16 + 14 * i}" fill="{colour}">'
            f"{escape(PATH_TITLES[result.path])}: {capacity} req/s</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def write_reports(results: list[PathResult], config: StepConfig, report_dir: Path) -> str:
    """capacity.csv, capacity.md and capacity.svg in `report_dir`; returns the Markdown table."""
    rows = table_rows(results)
    with (report_dir / "capacity.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    limits = f"p95 <= {config.p95_ms:g} ms, failures <= {config.max_fail_ratio:.0%}"
    table = markdown(rows)
    (report_dir / "capacity.md").write_text(
        f"Capacity per verification path ({limits}):\n\n{table}\n"
    )
    (report_dir / "capacity.svg").write_text(svg_chart(results, limits))
    return table


def find_capacity(
    paths: list[str],
    env: dict[str, str],
    config: StepConfig,
    report_dir: Path,
    extra: list[str] = (),
    cached_receiver_url: str = "",
) -> list[PathResult]:
    """Run every path in turn (never at once: they would share the receiver), write reports."""
    report_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in paths:
        path_env = dict(env)
        if path == "opaque-cached":
            if not cached_receiver_url:
                print("loadtest: capacity: skipping opaque-cached (no --cached-receiver-url)")
                continue
            path_env["LOADTEST_RECEIVER_URL"] = cached_receiver_url
        results.append(run_path(path, path_env, config, report_dir, list(extra)))
    table = write_reports(results, config, report_dir)
    print(f"loadtest: capacity per path, reports in {report_dir}/\n{table}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--paths", default=",".join(PATH_USERS), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument(
        "--targets-from-env",
        action="store_true",
        help="your services: LOADTEST_* and keys from the environment",
    )
    parser.add_argument(
        "--cached-receiver-url",
        default=os.environ.get("LOADTEST_CACHED_RECEIVER_URL", ""),
        help="a receiver with its verification cache on, for the opaque-cached path "
        "(env LOADTEST_CACHED_RECEIVER_URL)",
    )
    for name, kind, what in (
        ("start_rps", float, "req/s offered by the first step"),
        ("step_rps", float, "req/s added by each further step"),
        ("step_s", float, "seconds each step is held"),
        ("max_steps", int, "steps at most per path"),
        ("user_rps", float, "req/s of one Locust user (a step runs rate / this users)"),
        ("p95_ms", float, "limit: p95 latency of a step"),
        ("max_fail_ratio", float, "limit: failure ratio of a step"),
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=getattr(StepConfig, name),
            help=f"{what} (default %(default)s)",
        )
    parser.add_argument(
        "--workers", type=int, default=2, help="local stack: gunicorn workers (default 2)"
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=REPO_ROOT / "reports" / "capacity",
        help="folder for the CSV, Markdown and SVG (default reports/capacity)",
    )
    parser.add_argument("locust_args", nargs="*", help="after --: extra Locust options")
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATH_USERS]
    if unknown:
        parser.error(f"unknown path(s) {unknown}; choose from {sorted(PATH_USERS)}")
    config = StepConfig(
        args.start_rps,
        args.step_rps,
        args.step_s,
        args.max_steps,
        args.user_rps,
        args.p95_ms,
        args.max_fail_ratio,
    )
    reports = args.reports.resolve()
    if args.targets_from_env:
        results = find_capacity(
            paths, dict(os.environ), config, reports, args.locust_args, args.cached_receiver_url
        )
        return 0 if all(r.capacity_rps is not None for r in results) else 1
    with (
        tempfile.TemporaryDirectory(prefix="m2m-capacity-") as tmp,
        Stack(Path(tmp), workers=args.workers) as stack,
    ):
        cached = stack.receiver_server({"M2M_VERIFY_CACHE_SECONDS": "300"})
        stack.servers["cached-receiver"] = cached
        cached.start()
        cached.wait_healthy()
        env = {**clean_env(), **stack.locust_env()}
        results = find_capacity(paths, env, config, reports, args.locust_args, cached.url)
    return 0 if all(r.capacity_rps is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
