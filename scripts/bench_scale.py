"""The scale benchmark: does the issuer cost the same with 10k, 100k and 1M tokens behind it?

    python scripts/bench_scale.py            # 10k, 100k and 1M tokens: a few minutes
    python scripts/bench_scale.py --quick    # 10k and 100k only
    python scripts/bench_scale.py --write-path  # 10k, a verification's writes only: 30 s

For each size it builds an issuer database through the issuer's own code (create_app for the
schema, seed and keys; then a bulk path that writes per token exactly what the API writes: the
token row, its `create` usage record and two `verify` records with `last_used_at`, a batch of
tokens per transaction, the usage triggers firing as they do for a request), written in time
order over the last 24 hours (as a long load test writes them), with one-hour tokens. A fresh
process then measures, through Flask's test client (the app's own cost, no HTTP server in the
way): the first /metrics scrape, the usage API and
dashboard pages, token lists, creation and verification rates, a verification against a
read-only lookup of the same token, the process's peak memory, and the background pruner
clearing the backlog (raw records past an hour) while requests keep coming. It prints one table
with the growth factor per decade. Times are medians of a few runs on shared cores: read the
growth factors, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mock_issuer import create_app, db, ids, machines, pruning, tokens  # noqa: E402
from mock_issuer.dashboard import auth, sessions  # noqa: E402

SECRET_KEY = "sk_test_benchscale" + "0" * 22
MACHINES = 10  # callers; one receiver every caller is scoped to
TOKEN_TTL_MS = 3_600_000
SPREAD_MS = 24 * 3_600_000
BATCH = 20_000
RUNS = 5
PRUNE_WATCH_SECONDS = 45

ROUTES = {  # label: (path, needs the dashboard session)
    "GET /v1/usage?range=day": ("/v1/usage?range=day", False),
    "GET /v1/usage?range=30d": ("/v1/usage?range=30d", False),
    "/dashboard/usage": ("/dashboard/usage", True),
    "/dashboard/usage?split=machine": ("/dashboard/usage?split=machine", True),
    "/dashboard/usage?range=30d&split=machine": ("/dashboard/usage?range=30d&split=machine", True),
    "GET /v1/m2m_tokens?subject=": ("/v1/m2m_tokens?subject={subject}", False),
    "… &expired=true": ("/v1/m2m_tokens?subject={subject}&expired=true", False),
    "… &expired=true&revoked=true": (
        "/v1/m2m_tokens?subject={subject}&expired=true&revoked=true",
        False,
    ),
    "/dashboard/machines": ("/dashboard/machines", True),
}


def app_config(path: str) -> dict[str, object]:
    return {
        "CLERK_SECRET_KEY": SECRET_KEY,
        "MOCK_ISSUER_DB": path,
        "MOCK_ISSUER_URL": "http://127.0.0.1:8799",
        "MOCK_ISSUER_SEED": "",
        "TESTING": True,
    }


# ---- building ----


def build(path: str, n_tokens: int) -> dict[str, object]:
    """An issuer database with `n_tokens` tokens and three usage records each."""
    create_app(app_config(path))
    conn = db.connect(path)
    # The bulk path's own connection settings: no sync to disk per batch, a big page cache for
    # the random-order token indexes (the rows written are the same either way).
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -400000")
    receiver, receiver_key = machines.create_machine(conn, "bench-receiver")
    callers = [
        machines.create_machine(conn, f"bench-caller-{i}", scoped_machines=[receiver.id])[0].id
        for i in range(MACHINES)
    ]
    scopes_json = json.dumps([receiver.id], separators=(",", ":"))
    rng = random.Random(n_tokens)
    now = db.now_ms()
    for start in range(0, n_tokens, BATCH):
        token_rows, events = [], []
        for i in range(start, min(start + BATCH, n_tokens)):
            # In time order, as a load test writes them: one token every SPREAD_MS / n_tokens.
            created = now - SPREAD_MS + i * SPREAD_MS // n_tokens + rng.randrange(50)
            used = created + rng.randrange(TOKEN_TTL_MS // 2)
            subject = rng.choice(callers)
            token_rows.append(
                (
                    ids.new_token_id(),
                    ids.secret_hash(ids.new_token_secret()),
                    subject,
                    "null",
                    scopes_json,
                    created + TOKEN_TTL_MS,
                    used,
                    created,
                    created,
                )
            )
            events += [
                (created, "create", "opaque", subject, "ok"),
                (created + 1, "verify", "opaque", subject, "ok"),
                (used, "verify", "opaque", subject, "ok"),
            ]
        with db.write(conn):  # what tokens._create_opaque and _verify_opaque write, in bulk
            conn.executemany(
                "INSERT INTO m2m_tokens (id, token_hash, subject, claims, scopes, expiration,"
                " last_used_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                token_rows,
            )
            conn.executemany(
                "INSERT INTO usage_events (ts, kind, format, machine_id, outcome)"
                " VALUES (?, ?, ?, ?, ?)",
                events,
            )
    db.close_thread_connections()
    return {"subject": callers[0], "receiver_key": receiver_key}


# ---- measuring (in a fresh process) ----


def timed(fn, runs: int = RUNS) -> float:
    """Median milliseconds of `runs` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def rate(fn, seconds: float = 2.0, limit: int = 5000, clock=time.perf_counter) -> float:
    """Calls per second of `clock` over about `seconds` (at most `limit` calls)."""
    started, n = clock(), 0
    while n < limit and clock() - started < seconds:
        fn()
        n += 1
    return n / (clock() - started)


def get_ok(client, path: str, headers=None) -> None:
    resp = client.get(path, headers=headers)
    if resp.status_code != 200:
        raise RuntimeError(f"{path}: {resp.status_code}")


def measure(path: str, subject: str, receiver_key: str) -> dict[str, float]:
    app = create_app(app_config(path))
    client = app.test_client()
    sk = {"Authorization": f"Bearer {SECRET_KEY}"}
    results: dict[str, float] = {}
    started = time.perf_counter()
    get_ok(client, "/metrics")
    results["first /metrics scrape"] = (time.perf_counter() - started) * 1000
    with client.session_transaction("/dashboard/") as session:  # what auth.sign_in stores
        session["signed_in_at"] = int(time.time())
        session[auth.GENERATION_FIELD] = sessions.session_stamp(db.connect(path), SECRET_KEY)
    for label, (route, dashboard) in ROUTES.items():
        url = route.format(subject=subject)
        results[label] = timed(lambda url=url, d=dashboard: get_ok(client, url, None if d else sk))
    conn = db.connect(path)
    caller_key = machines.get_secret_key(conn, subject)
    caller = {"Authorization": f"Bearer {caller_key}"}
    minted: list[str] = []

    def create() -> None:
        resp = client.post("/v1/m2m_tokens", headers=caller, json={})
        minted.append(resp.json["token"])

    results["creations/s (API)"] = rate(create)
    receiver = {"Authorization": f"Bearer {receiver_key}"}
    results["verifications/s (API)"] = rate(
        lambda: client.post(
            "/v1/m2m_tokens/verify", headers=receiver, json={"token": random.choice(minted)}
        )
    )
    results.update(write_path(conn, app.extensions["settings"].mock_issuer_url, minted))
    results["peak memory (MB)"] = peak_rss_mb()
    results.update(prune_under_load(app, client, caller, sk))
    return results


def write_path(conn, issuer_url: str, minted: list[str], rounds: int = 1) -> dict[str, float]:
    """A verification with its writes against a read-only lookup of the same tokens: median
    CPU µs per call (this process's, so other jobs on shared cores count less) over `rounds`
    alternating rounds."""
    variants = {
        "verify, with its writes (µs CPU)": lambda: tokens.verify_token(
            conn, random.choice(minted), issuer_url=issuer_url
        ),
        "verify, read-only lookup (µs CPU)": lambda: conn.execute(
            "SELECT * FROM m2m_tokens WHERE token_hash = ? AND revoked = 0 AND expiration > ?",
            (ids.secret_hash(random.choice(minted)), db.now_ms()),
        ).fetchone(),
    }
    samples: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, fn in variants.items():
            samples[label].append(1e6 / rate(fn, 2.0 / rounds, clock=time.process_time))
    return {label: statistics.median(values) for label, values in samples.items()}


def measure_write_path(path: str, subject: str) -> dict[str, float]:
    """Only the write-path comparison (`--write-path`): quick to repeat while tuning it."""
    app = create_app(app_config(path))
    client = app.test_client()
    conn = db.connect(path)
    caller = {"Authorization": f"Bearer {machines.get_secret_key(conn, subject)}"}
    minted = [
        client.post("/v1/m2m_tokens", headers=caller, json={}).json["token"] for _ in range(1000)
    ]
    results = write_path(conn, app.extensions["settings"].mock_issuer_url, minted, rounds=9)
    results["writes / read-only"] = (
        results["verify, with its writes (µs CPU)"] / results["verify, read-only lookup (µs CPU)"]
    )
    return results


def peak_rss_mb() -> float:
    """This process's peak resident memory since its exec (VmHWM; getrusage's ru_maxrss would
    carry over the builder's peak, which Linux keeps across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prune_under_load(app, client, caller, sk) -> dict[str, float]:
    """The pruner clears the backlog in the background while this thread keeps requesting."""
    conn = db.connect(app.extensions["settings"].mock_issuer_db)
    backlog_sql = "SELECT COUNT(*) FROM usage_events WHERE ts < ?"
    cutoff = db.now_ms() - 3_600_000
    backlog = conn.execute(backlog_sql, (cutoff,)).fetchone()[0]
    pruner = pruning.Pruner(app.extensions["settings"].mock_issuer_db, 30 * 86_400_000)
    done = threading.Event()
    finished_at: list[float] = []

    def prune() -> None:
        pruner.run_once()
        finished_at.append(time.perf_counter())
        done.set()
        db.close_thread_connections()

    started = time.perf_counter()
    threading.Thread(target=prune, daemon=True).start()
    slowest, requests = 0.0, 0
    while not done.is_set() and time.perf_counter() - started < PRUNE_WATCH_SECONDS:
        for method, url, headers in (
            ("post", "/v1/m2m_tokens", caller),
            ("get", "/v1/usage?range=day", sk),
            ("get", "/v1/m2m_tokens?subject=" + caller_subject(conn, caller), sk),
        ):
            t0 = time.perf_counter()
            body = {"json": {}} if method == "post" else {}
            getattr(client, method)(url, headers=headers, **body)
            slowest = max(slowest, time.perf_counter() - t0)
            requests += 1
    pruner._stop.set()  # stop after the batch in progress if the watch ended first
    done.wait(10)
    left = conn.execute(backlog_sql, (cutoff,)).fetchone()[0]
    elapsed = (finished_at[0] if finished_at else time.perf_counter()) - started
    return {
        "prune backlog (raw records)": backlog,
        "pruned rows/s (raw records)": (backlog - left) / elapsed,
        "slowest request while pruning (ms)": slowest * 1000,
        "requests while pruning": requests,
    }


def caller_subject(conn, caller: dict[str, str]) -> str:
    key = caller["Authorization"].removeprefix("Bearer ")
    subject = machines.machine_id_for_key(conn, key)
    assert subject is not None
    return subject


# ---- the table ----

HIGHER_IS_BETTER = ("/s",)
GOALS = {  # label: (goal at 1M tokens, met?)
    "first /metrics scrape": ("< 100 ms", lambda v, base: v < 100),
    "GET /v1/usage?range=day": ("< 100 ms", lambda v, base: v < 100),
    "GET /v1/usage?range=30d": ("< 100 ms", lambda v, base: v < 100),
    "/dashboard/usage": ("< 100 ms", lambda v, base: v < 100),
    "/dashboard/usage?split=machine": ("< 100 ms", lambda v, base: v < 100),
    "/dashboard/usage?range=30d&split=machine": ("< 100 ms", lambda v, base: v < 100),
    "GET /v1/m2m_tokens?subject=": ("< 20 ms", lambda v, base: v < 20),
    "… &expired=true": ("< 20 ms", lambda v, base: v < 20),
    "… &expired=true&revoked=true": ("< 20 ms", lambda v, base: v < 20),
    "creations/s (API)": ("within 10 % of 10k", lambda v, base: v >= 0.9 * base),
    "verifications/s (API)": ("within 10 % of 10k", lambda v, base: v >= 0.9 * base),
    "slowest request while pruning (ms)": ("< 1000 ms", lambda v, base: v < 1000),
}


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(sizes: list[int], results: list[dict[str, float]], build_s: list[float]) -> str:
    heads = [f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M" for n in sizes]
    growth = [f"x {heads[i + 1]}/{heads[i]}" for i in range(len(sizes) - 1)]
    lines = [
        "| ms unless stated | " + " | ".join(heads + growth) + " | goal at the largest |",
        "|---" * (len(heads) + len(growth) + 2) + "|",
    ]
    rows = {"build (s, bulk path)": build_s, **{k: [r[k] for r in results] for k in results[0]}}
    for label, values in rows.items():
        factors = [
            f"{values[i + 1] / values[i]:.2f}" if values[i] else "-" for i in range(len(values) - 1)
        ]
        goal = ""
        if label in GOALS:
            text, check = GOALS[label]
            goal = f"{text}: {'met' if check(values[-1], values[0]) else 'NOT met'}"
        lines.append(f"| {label} | " + " | ".join([*map(fmt, values), *factors]) + f" | {goal} |")
    return "\n".join(lines)


def run_measure(path: str, built: dict[str, object], write_path_only: bool) -> dict[str, float]:
    """Measure `path` in a fresh process (no page cache or memory carried over from the build)."""
    command = [sys.executable, __file__, "--measure", path, str(built["subject"])]
    command += ["-"] if write_path_only else [str(built["receiver_key"])]
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "M2M_SKIP_DOTENV": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k tokens only")
    parser.add_argument(
        "--write-path",
        action="store_true",
        help="10k tokens, only a verification's writes against a read-only lookup",
    )
    parser.add_argument("--measure", nargs=3, metavar=("DB", "SUBJECT", "RECEIVER_KEY"))
    args = parser.parse_args()
    if args.measure:
        path, subject, receiver_key = args.measure
        if receiver_key == "-":
            print(json.dumps(measure_write_path(path, subject)))
        else:
            print(json.dumps(measure(path, subject, receiver_key)))
        return
    sizes = [10_000] if args.write_path else [10_000, 100_000]
    sizes += [] if args.quick or args.write_path else [1_000_000]
    results, build_s = [], []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in sizes:
            path = str(Path(tmp) / f"issuer-{n}.db")
            started = time.perf_counter()
            built = build(path, n)
            build_s.append(time.perf_counter() - started)
            print(f"built {n:,} tokens in {build_s[-1]:.1f} s; measuring", file=sys.stderr)
            results.append(run_measure(path, built, args.write_path))
    print(table(sizes, results, build_s))


if __name__ == "__main__":
    main()
