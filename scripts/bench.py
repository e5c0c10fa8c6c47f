"""The performance benchmark: one table, measured in one run on this machine, printed and written
as Markdown (bench-results.md by default).

    python scripts/bench.py            # about 4 minutes
    python scripts/bench.py --quick    # under a minute: short rounds, fewer sends, a quick look

It times our JWT verifier in process against a bare `jwt.decode` with a preloaded key, then starts
its own stack on 127.0.0.1 under gunicorn (issuer; a receiver with both verification caches off;
one with the verified-JWT memo at its default and the opaque cache on; the caller) and measures,
in interleaved rounds so background noise hits every scenario alike: receiver requests/s, p50/p99
and server CPU per request for an unprotected copy of the handler, JWTs with the signature
checked every request, JWTs with the memo, opaque tokens and cached opaque tokens (each as a ratio
to the unprotected handler); issuer creations/s (opaque, JWT) and opaque verifications/s; and the
tokens created (and their estimated price) for 10,000 caller sends with token reuse against one
token per send. The load generator runs on the same cores as the servers: absolute numbers are
this machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402
import requests  # noqa: E402

from loadtest.issuer_client import IssuerClient  # noqa: E402
from loadtest.stack import Server, Stack  # noqa: E402
from mock_issuer.dashboard.pricing import CLERK_PRICES as PRICES  # noqa: E402
from mock_issuer.dashboard.pricing import line_item  # noqa: E402
from scripts.bench_apps import UNPROTECTED_PATH  # noqa: E402
from scripts.bench_load import Sample, Target, closed_loop, measure, send  # noqa: E402
from scripts.bench_verifier import bench_verifier  # noqa: E402

UNPROTECTED = "unprotected handler (same app, no token check)"
JWT_CHECKED = "JWT, signature checked every request (M2M_JWT_CACHE_SECONDS=0)"
JWT_MEMO = "JWT, verified-token memo (default)"
OPAQUE = "opaque, the issuer asked every request"
OPAQUE_CACHED = "opaque, verification cache on (M2M_VERIFY_CACHE_SECONDS=300)"
# Goals for the share of the unprotected handler's throughput left after verification.
RATIO_GOALS = {JWT_CHECKED: 0.85, JWT_MEMO: 0.85, OPAQUE_CACHED: 0.85}
VERIFIER_GOAL = 1.3  # our verifier's time per JWT at most 1.3x a bare jwt.decode
# Receiver with both caches off (the stack's default) and with the receiver's defaults + the cache.
CACHES_ON_ENV: dict[str, str | None] = {
    "M2M_JWT_CACHE_SECONDS": None,  # unset: the receiver's own default memo
    "M2M_VERIFY_CACHE_SECONDS": "300",
}
BENCH_APP = "scripts.bench_apps:receiver_with_baseline()"
# --quick: the same table from short rounds and fewer sends (noisier; to check the script works).
QUICK = {
    "seconds": 1.0,
    "rounds": 1,
    "sends": 300,
    "clerk_sends": 100,
    "verify_calls": 300,
    "verify_rounds": 3,
}
MESSAGE = json.dumps({"message": "Hello from the benchmark"}).encode()
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Row:
    group: str
    measurement: str
    value: str
    p50: str = "-"
    p99: str = "-"
    cpu: str = "-"
    ratio: str = "-"
    goal: str = "-"


@dataclass(frozen=True)
class Result:
    """One scenario's merged rounds: latencies, median req/s, server CPU seconds per request."""

    sample: Sample
    rps: float
    cpu_per_request: float


def bearer(token: str) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {token}"}


def server_cpu_seconds(server: Server) -> float:
    """CPU time used so far by one gunicorn server: its master and its workers."""
    master = psutil.Process(server.process.pid)
    total = 0.0
    for process in [master, *master.children(recursive=True)]:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def interleaved(
    scenarios: dict[str, tuple[Target, Server]], concurrency: int, seconds: float, rounds: int
) -> dict[str, Result]:
    """Measure every scenario once per round, round after round, counting the CPU of the server
    it hits; then merge each one's rounds."""
    for target, _server in scenarios.values():  # warm-up: JWKS fetched, caches filled
        measure(target, concurrency, min(seconds, 0.5))
    runs: dict[str, list[tuple[Sample, float]]] = {name: [] for name in scenarios}
    for _ in range(rounds):
        for name, (target, server) in scenarios.items():
            cpu_before = server_cpu_seconds(server)
            sample = measure(target, concurrency, seconds)
            runs[name].append((sample, server_cpu_seconds(server) - cpu_before))
    results = {}
    for name, measured in runs.items():
        samples = [sample for sample, _cpu in measured]
        total = Sample(
            ok=sum(s.ok for s in samples),
            errors=sum(s.errors for s in samples),
            seconds=sum(s.seconds for s in samples),
            latencies=[t for s in samples for t in s.latencies],
        )
        handled = max(1, total.ok + total.errors)
        cpu = sum(cpu for _sample, cpu in measured) / handled
        results[name] = Result(total, statistics.median(s.rps for s in samples), cpu)
    return results


def rate_row(group: str, name: str, result: Result, **extra: str) -> Row:
    sample = result.sample
    errors = f" ({sample.errors} errors)" if sample.errors else ""
    return Row(
        group,
        name,
        f"{result.rps:,.0f} req/s{errors}",
        f"{sample.percentile_ms(50):.1f}",
        f"{sample.percentile_ms(99):.1f}",
        **extra,
    )


def met(value: float, goal: float, sense: str = ">=") -> str:
    ok = value <= goal if sense == "<=" else value >= goal
    return "met" if ok else "NOT met"


def verifier_rows(args) -> list[Row]:
    """Time per JWT verification in process: our verifier against a bare jwt.decode."""
    costs = bench_verifier(args.verify_calls, args.verify_rounds)
    ratio = costs.checked / costs.bare

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.1f} µs per verify"

    return [
        Row(
            "verifier", "bare jwt.decode, key preloaded (RS256-2048)", us(costs.bare), ratio="1.00"
        ),
        Row(
            "verifier",
            "M2MVerifier.verify, signature checked (memo off)",
            us(costs.checked),
            ratio=f"{ratio:.2f}",
            goal=f"<= {VERIFIER_GOAL}: {met(ratio, VERIFIER_GOAL, '<=')}",
        ),
        Row(
            "verifier",
            "M2MVerifier.verify, verified-token memo hit",
            us(costs.memo_hit),
            ratio=f"{costs.memo_hit / costs.bare:.2f}",
        ),
    ]


def receiver_rows(stack: Stack, tokens: dict[str, str], args) -> list[Row]:
    plain, caches = stack.servers["receiver"], stack.servers["receiver_caches"]

    def receive(server: Server, token: str) -> tuple[Target, Server]:
        return Target(server.url, "POST", "/receive", MESSAGE, bearer(token)), server

    scenarios = {
        UNPROTECTED: (Target(plain.url, "POST", UNPROTECTED_PATH, MESSAGE, JSON), plain),
        JWT_CHECKED: receive(plain, tokens["jwt"]),
        JWT_MEMO: receive(caches, tokens["jwt"]),
        OPAQUE: receive(plain, tokens["opaque"]),
        OPAQUE_CACHED: receive(caches, tokens["opaque"]),
    }
    results = interleaved(scenarios, args.concurrency, args.seconds, args.rounds)
    base = results[UNPROTECTED]
    rows = []
    for name, result in results.items():
        ratio = result.rps / base.rps if base.rps else 0.0
        cpu_ratio = base.cpu_per_request / result.cpu_per_request if result.cpu_per_request else 0
        goal = RATIO_GOALS.get(name)
        verdict = (
            f">= {goal:.2f}: {met(ratio, goal)} (CPU ratio: {met(cpu_ratio, goal)})"
            if goal
            else "-"
        )
        cpu = f"{result.cpu_per_request * 1e6:,.0f} ({cpu_ratio:.2f})"
        rows.append(rate_row("receiver", name, result, cpu=cpu, ratio=f"{ratio:.2f}", goal=verdict))
    return rows


def issuer_rows(stack: Stack, tokens: dict[str, str], args) -> list[Row]:
    issuer = stack.servers["issuer"].url
    seed = stack.seed

    def create(fmt: str) -> Target:
        body = json.dumps({"token_format": fmt, "seconds_until_expiration": 60}).encode()
        return Target(issuer, "POST", "/v1/m2m_tokens", body, bearer(seed.caller.secret_key), 201)

    verify_body = json.dumps({"token": tokens["opaque"]}).encode()
    server = stack.servers["issuer"]
    scenarios = {
        "token creations, opaque": (create("opaque"), server),
        "token creations, JWT": (create("jwt"), server),
        "opaque verifications": (
            Target(
                issuer,
                "POST",
                "/v1/m2m_tokens/verify",
                verify_body,
                bearer(seed.receiver.secret_key),
            ),
            server,
        ),
    }
    results = interleaved(scenarios, args.concurrency, args.seconds, args.rounds)
    return [
        rate_row("issuer", name, result, cpu=f"{result.cpu_per_request * 1e6:,.0f}")
        for name, result in results.items()
    ]


def usage_totals(stack: Stack) -> dict:
    """The issuer's usage counters for the caller machine over the last hour."""
    response = requests.get(
        f"{stack.servers['issuer'].url}/v1/usage",
        params={"range": "hour", "machine_id": stack.seed.caller.id},
        headers={"Authorization": f"Bearer {stack.seed.instance_secret_key}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["totals"]


def counted(stack: Stack, drive) -> tuple[int, int, Sample]:
    """Tokens created and opaque verifications (issuer usage deltas) while `drive()` runs."""
    before = usage_totals(stack)
    sample = drive()
    after = usage_totals(stack)

    def opaque_verifications(totals: dict) -> int:
        return sum(totals["verifications"]["opaque"].values())

    created = after["creations"]["total"] - before["creations"]["total"]
    return created, opaque_verifications(after) - opaque_verifications(before), sample


def price(creations: float, verifications: float) -> str:
    """Estimated price: as the month's only traffic (after the free tiers), and at list price."""
    items = (  # Clerk's list prices, as the issuer's dashboard bills; JWT verification is free
        line_item("creations", round(creations), PRICES.free_creations, PRICES.creation),
        line_item(
            "verifications", round(verifications), PRICES.free_verifications, PRICES.verification
        ),
    )
    monthly = sum(item.cost for item in items)
    listed = sum(item.count * item.unit_price for item in items)
    return f"${monthly:,.2f} after free tiers; ${listed:,.2f} at list price"


def cost_rows(stack: Stack, args) -> list[Row]:
    caller, receiver = stack.servers["caller"].url, stack.servers["receiver"].url
    issuer = stack.servers["issuer"].url
    send_opaque = Target(caller, "GET", "/send?format=opaque")

    def drive_caller() -> Sample:
        client = send_opaque.client(args.concurrency)
        return closed_loop(lambda: send(client, send_opaque), args.concurrency, count=args.sends)

    created, verified, sample = counted(stack, drive_caller)
    # Reuse depends on time (token lifetime), not on the count: never scale it; say so instead.
    label = "10,000 caller sends" if args.sends == 10_000 else f"{args.sends:,} caller sends"
    rows = [
        Row(
            "cost",
            f"{label}, token reuse (caller /send)",
            f"{created:,} tokens created, {verified:,} opaque verifications{_errors(sample)}",
            f"{sample.percentile_ms(50):.1f}",
            f"{sample.percentile_ms(99):.1f}",
            ratio=price(created, verified),
        )
    ]

    mint = Target(
        issuer,
        "POST",
        "/v1/m2m_tokens",
        json.dumps({"token_format": "opaque", "seconds_until_expiration": 30}).encode(),
        bearer(stack.seed.caller.secret_key),
        201,
    )

    def drive_clerk_style() -> Sample:
        """Clerk's example: a new token for every send, then POST it to the receiver."""
        issuer_client = mint.client(args.concurrency)
        receiver_client = Target(receiver, "POST", "/receive").client(args.concurrency)

        def one_send() -> bool:
            response = issuer_client.request("POST", mint.path, mint.body, mint.headers)
            body = response.read()
            if response.status_code != 201:
                return False
            token = json.loads(body)["token"]
            post = Target(receiver, "POST", "/receive", MESSAGE, bearer(token))
            return send(receiver_client, post)

        return closed_loop(one_send, args.concurrency, count=args.clerk_sends)

    created, verified, sample = counted(stack, drive_clerk_style)
    scale = 10_000 / args.clerk_sends
    note = (
        ""
        if args.clerk_sends == 10_000
        else f" ({args.clerk_sends:,} measured: {created:,} tokens, x{scale:g})"
    )
    rows.append(
        Row(
            "cost",
            f"10,000 sends, one token per send (Clerk's example){note}",
            f"{created * scale:,.0f} tokens created, {verified * scale:,.0f} opaque "
            f"verifications{_errors(sample)}",
            f"{sample.percentile_ms(50):.1f}",
            f"{sample.percentile_ms(99):.1f}",
            ratio=price(created * scale, verified * scale),
        )
    )
    return rows


def _errors(sample: Sample) -> str:
    return f" ({sample.errors} failed sends)" if sample.errors else ""


def markdown(rows: list[Row], args, elapsed_s: float) -> str:
    header = [
        "group",
        "measurement",
        "result",
        "p50 ms",
        "p99 ms",
        "server CPU µs/req (ratio)",
        "ratio / est. cost",
        "goal",
    ]
    lines = [
        "# Benchmark results",
        "",
        f"Measured in one run{' (--quick: short rounds, noisier)' if args.quick else ''} on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}), {time.strftime('%Y-%m-%d %H:%M')}, in {elapsed_s:.0f} s. "
        f"Servers: gunicorn, {args.workers} sync workers per app, on 127.0.0.1. Load: one "
        f"closed-loop generator process with {args.concurrency} concurrent requests, "
        f"{args.rounds} interleaved round(s) of {args.seconds:g} s per scenario; req/s is the "
        "median of the rounds. The generator shares the CPUs with the servers: compare the "
        "ratios; absolute numbers are this machine's.",
        "",
        "Ratios: **verifier** rows are time per verification against the bare `jwt.decode` "
        f"(median of {args.verify_rounds} interleaved rounds of {args.verify_calls:,} calls, in "
        "process); **receiver** rows are req/s against the unprotected handler, the share of "
        "throughput left after verification. Server CPU per request counts the receiver's (or "
        "issuer's) own processes over the same rounds, and its ratio is the unprotected "
        "handler's CPU per request over this row's: the capacity ratio on a machine of its own, "
        "steadier than req/s when other work shares the cores (opaque rows exclude the "
        "issuer's CPU). Goals are judged on the req/s ratio, the CPU ratio's verdict next to it.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        cells = [
            row.group,
            row.measurement,
            row.value,
            row.p50,
            row.p99,
            row.cpu,
            row.ratio,
            row.goal,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "JWT rows present the same token on every request, as a caller reusing its token does. "
        "With `M2M_JWT_CACHE_SECONDS=0` every request checks the RS256 signature and claims; "
        "with the memo (the receiver's default) only the first request in each worker does, and "
        "the rest are a memo hit. The unprotected handler and both caches-off rows run on one "
        "receiver; the memo and cached-opaque rows on a second, identical one with those caches "
        "on.",
        "",
        f"Prices: ${PRICES.creation} per token creation after {PRICES.free_creations:,} free a "
        f"month, ${PRICES.verification:.5f} per opaque verification after "
        f"{PRICES.free_verifications:,} free; JWT verification is local and free. "
        "'After free tiers' treats the 10,000 sends as the month's only traffic. Opaque "
        "verifications are the issuer's own usage counters; the caller's receiver runs with "
        "both caches off.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short rounds and fewer sends (under a minute), to check it works",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=4.0, help="per scenario and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--sends", type=int, default=10_000, help="caller sends, with reuse")
    parser.add_argument(
        "--clerk-sends", type=int, default=1_000, help="one-token-per-send sends (scaled to 10,000)"
    )
    parser.add_argument(
        "--verify-calls",
        type=int,
        default=2_000,
        help="JWT verifications per timed round, in process",
    )
    parser.add_argument("--verify-rounds", type=int, default=7, help="in-process timed rounds")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "bench-results.md",
        help="Markdown file for the table (default bench-results.md)",
    )
    args = parser.parse_args(argv)
    if args.quick:  # quick values, unless an option was given explicitly
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    print("bench: timing the JWT verifier in process...", file=sys.stderr, flush=True)
    rows = verifier_rows(args)
    with tempfile.TemporaryDirectory(prefix="m2m-bench-") as tmp:
        stack = Stack(Path(tmp), workers=args.workers, receiver_target=BENCH_APP)
        stack.servers["receiver_caches"] = stack.receiver_server(CACHES_ON_ENV, BENCH_APP)
        with stack:
            issuer = IssuerClient(stack.servers["issuer"].url)
            tokens = {
                fmt: issuer.mint(stack.seed.caller.secret_key, fmt, 3600).token
                for fmt in ("opaque", "jwt")
            }
            print("bench: measuring the receiver...", file=sys.stderr, flush=True)
            rows += receiver_rows(stack, tokens, args)
            print("bench: measuring the issuer...", file=sys.stderr, flush=True)
            rows += issuer_rows(stack, tokens, args)
            print("bench: driving the caller for the cost figures...", file=sys.stderr, flush=True)
            rows += cost_rows(stack, args)
    text = markdown(rows, args, time.perf_counter() - started)
    print(text)
    args.output.write_text(text)
    print(f"bench: written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
