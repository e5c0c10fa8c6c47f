"""The performance benchmark: one table, measured in one run on this machine, printed and written
as Markdown (bench-results.md by default).

    python scripts/bench.py                  # about 4 minutes
    python scripts/bench.py --seconds 1 --rounds 1 --sends 500 --clerk-sends 100   # quick look

It starts its own stack on 127.0.0.1 under gunicorn (issuer, a receiver with the verification
cache off, one with it on, the caller) and measures, in interleaved rounds so background noise
hits every scenario alike: receiver requests/s and p50/p99 for an unprotected copy of the
handler, JWT, opaque, and cached opaque tokens (each as a ratio to the unprotected handler);
issuer creations/s (opaque, JWT) and opaque verifications/s; and the tokens created (and their
estimated price) for 10,000 caller sends with token reuse against one token per send.
The load generator runs on the same cores as the servers: absolute numbers are this machine's.
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

import requests  # noqa: E402

from loadtest.issuer_client import IssuerClient  # noqa: E402
from loadtest.stack import Stack  # noqa: E402
from scripts.bench_apps import UNPROTECTED_PATH  # noqa: E402
from scripts.bench_load import Sample, Target, closed_loop, measure, send  # noqa: E402

# Clerk's published M2M pricing (see the wire contract); JWT verification is local and free.
CREATION_PRICE = 0.001
CREATION_FREE_PER_MONTH = 2_500
OPAQUE_VERIFICATION_PRICE = 0.00001
OPAQUE_VERIFICATIONS_FREE_PER_MONTH = 100_000
RATIO_GOALS = {"JWT": 0.85, "opaque, verification cache on": 0.85}
MESSAGE = json.dumps({"message": "Hello from the benchmark"}).encode()
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Row:
    group: str
    measurement: str
    value: str
    p50: str = "-"
    p99: str = "-"
    ratio: str = "-"
    goal: str = "-"


def bearer(token: str) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {token}"}


def merged(samples: list[Sample]) -> tuple[Sample, float]:
    """All rounds' latencies in one sample, and the median of the rounds' requests/s."""
    total = Sample(
        ok=sum(s.ok for s in samples),
        errors=sum(s.errors for s in samples),
        seconds=sum(s.seconds for s in samples),
        latencies=[t for s in samples for t in s.latencies],
    )
    return total, statistics.median(s.rps for s in samples)


def interleaved(
    targets: dict[str, Target], concurrency: int, seconds: float, rounds: int
) -> dict[str, tuple[Sample, float]]:
    """Measure every target once per round, round after round, then merge each one's rounds."""
    for target in targets.values():  # warm-up: JWKS fetched, caches filled, connections open
        measure(target, concurrency, min(seconds, 0.5))
    runs: dict[str, list[Sample]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            runs[name].append(measure(target, concurrency, seconds))
    return {name: merged(samples) for name, samples in runs.items()}


def rate_row(group: str, name: str, sample: Sample, rps: float, **extra: str) -> Row:
    errors = f" ({sample.errors} errors)" if sample.errors else ""
    return Row(group, name, f"{rps:,.0f} req/s{errors}", f"{sample.percentile_ms(50):.1f}",
               f"{sample.percentile_ms(99):.1f}", **extra)  # fmt: skip


def receiver_rows(stack: Stack, tokens: dict[str, str], args) -> list[Row]:
    plain, cached = stack.servers["receiver"].url, stack.servers["receiver_cached"].url
    targets = {
        "unprotected handler": Target(plain, "POST", UNPROTECTED_PATH, MESSAGE, JSON),
        "JWT": Target(plain, "POST", "/receive", MESSAGE, bearer(tokens["jwt"])),
        "opaque": Target(plain, "POST", "/receive", MESSAGE, bearer(tokens["opaque"])),
        "opaque, verification cache on": Target(
            cached, "POST", "/receive", MESSAGE, bearer(tokens["opaque"])
        ),
    }
    results = interleaved(targets, args.concurrency, args.seconds, args.rounds)
    base_rps = results["unprotected handler"][1]
    rows = []
    for name, (sample, rps) in results.items():
        ratio = rps / base_rps if base_rps else 0.0
        goal = RATIO_GOALS.get(name)
        verdict = f">= {goal:.2f}: {'met' if ratio >= goal else 'NOT met'}" if goal else "-"
        rows.append(rate_row("receiver", name, sample, rps, ratio=f"{ratio:.2f}", goal=verdict))
    return rows


def issuer_rows(stack: Stack, tokens: dict[str, str], args) -> list[Row]:
    issuer = stack.servers["issuer"].url
    seed = stack.seed

    def create(fmt: str) -> Target:
        body = json.dumps({"token_format": fmt, "seconds_until_expiration": 60}).encode()
        return Target(issuer, "POST", "/v1/m2m_tokens", body, bearer(seed.caller.secret_key), 201)

    verify_body = json.dumps({"token": tokens["opaque"]}).encode()
    targets = {
        "token creations, opaque": create("opaque"),
        "token creations, JWT": create("jwt"),
        "opaque verifications": Target(
            issuer, "POST", "/v1/m2m_tokens/verify", verify_body, bearer(seed.receiver.secret_key)
        ),
    }
    results = interleaved(targets, args.concurrency, args.seconds, args.rounds)
    return [rate_row("issuer", name, sample, rps) for name, (sample, rps) in results.items()]


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
    monthly = (max(0, creations - CREATION_FREE_PER_MONTH) * CREATION_PRICE
               + max(0, verifications - OPAQUE_VERIFICATIONS_FREE_PER_MONTH)
               * OPAQUE_VERIFICATION_PRICE)  # fmt: skip
    listed = creations * CREATION_PRICE + verifications * OPAQUE_VERIFICATION_PRICE
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
        Row("cost", f"{label}, token reuse (caller /send)",
            f"{created:,} tokens created, {verified:,} opaque verifications{_errors(sample)}",
            f"{sample.percentile_ms(50):.1f}", f"{sample.percentile_ms(99):.1f}",
            price(created, verified))
    ]  # fmt: skip

    mint = Target(issuer, "POST", "/v1/m2m_tokens",
                  json.dumps({"token_format": "opaque", "seconds_until_expiration": 30}).encode(),
                  bearer(stack.seed.caller.secret_key), 201)  # fmt: skip

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
        Row("cost", f"10,000 sends, one token per send (Clerk's example){note}",
            f"{created * scale:,.0f} tokens created, {verified * scale:,.0f} opaque "
            f"verifications{_errors(sample)}", f"{sample.percentile_ms(50):.1f}",
            f"{sample.percentile_ms(99):.1f}", price(created * scale, verified * scale))
    )  # fmt: skip
    return rows


def _errors(sample: Sample) -> str:
    return f" ({sample.errors} failed sends)" if sample.errors else ""


def markdown(rows: list[Row], args, elapsed_s: float) -> str:
    header = ["group", "measurement", "result", "p50 ms", "p99 ms",
              "vs unprotected / est. cost", "goal"]  # fmt: skip
    lines = [
        "# Benchmark results",
        "",
        f"Measured in one run on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}), {time.strftime('%Y-%m-%d %H:%M')}, in "
        f"{elapsed_s:.0f} s. Servers: gunicorn, {args.workers} sync workers per app, on "
        "127.0.0.1. Load: one closed-loop generator process with "
        f"{args.concurrency} concurrent requests, {args.rounds} interleaved round(s) of "
        f"{args.seconds:g} s per scenario; req/s is the median of the rounds. The generator "
        "shares the CPUs with the servers: compare the ratios; absolute numbers are this "
        "machine's.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        cells = [row.group, row.measurement, row.value, row.p50, row.p99, row.ratio, row.goal]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Prices: ${CREATION_PRICE} per token creation after {CREATION_FREE_PER_MONTH:,} free a "
        f"month, ${OPAQUE_VERIFICATION_PRICE} per opaque verification after "
        f"{OPAQUE_VERIFICATIONS_FREE_PER_MONTH:,} free; JWT verification is local and free. "
        "'After free tiers' treats the 10,000 sends as the month's only traffic. Opaque "
        "verifications are the issuer's own usage counters; the caller's receiver runs with the "
        "verification cache off.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=4.0, help="per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sends", type=int, default=10_000, help="caller sends, with reuse")
    parser.add_argument("--clerk-sends", type=int, default=1_000,
                        help="one-token-per-send sends (scaled to 10,000)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="m2m-bench-") as tmp:
        stack = Stack(Path(tmp), workers=args.workers,
                      receiver_target="scripts.bench_apps:receiver_with_baseline()")  # fmt: skip
        stack.servers["receiver_cached"] = stack.receiver_server(
            {"M2M_VERIFY_CACHE_SECONDS": "300"}, "scripts.bench_apps:receiver_with_baseline()"
        )
        with stack:
            issuer = IssuerClient(stack.servers["issuer"].url)
            tokens = {
                fmt: issuer.mint(stack.seed.caller.secret_key, fmt, 3600).token
                for fmt in ("opaque", "jwt")
            }
            print("bench: measuring the receiver...", file=sys.stderr, flush=True)
            rows = receiver_rows(stack, tokens, args)
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
