"""Benchmark the receiver's verification, measured in one run (a script, not a timed test).

1. Per-verify cost of `M2MVerifier.verify` on a JWT against a bare `jwt.decode` with a preloaded
   key (goal: ratio <= 1.3).
2. Requests per second of the receiver under gunicorn, same server and worker count, same
   request (same body, same Authorization header) for: an unprotected handler, the same handler
   protected with a JWT, with an opaque token, and with an opaque token and the cache on
   (goals: JWT and cached opaque >= 0.85x the unprotected handler).

Usage: .venv/bin/python scripts/bench_receiver.py [--seconds 3] [--rounds 2] [--workers 2]
Everything binds to 127.0.0.1; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import psutil
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from receiver_app.jwks import JwksCache  # noqa: E402
from receiver_app.verifier import M2MVerifier, VerifierConfig  # noqa: E402
from tests.harness import base_env, free_port, healthz_ok, server_args, wait_until  # noqa: E402

DEMO_SEED = REPO_ROOT / "mock_issuer" / "demo_seed.json"
DEMO_SECRET_KEY = "sk_test_democ63cd2d7a15f4a9a8031d630f63b"  # noqa: S105  (public demo value)
CALLER_ID = "mch_democaller00000000000000000"
RECEIVER_ID = "mch_demoreceiver000000000000000"


# The app gunicorn serves: the receiver plus one handler mounted open and protected.


def create_app():
    """`gunicorn 'scripts.bench_receiver:create_app()'`: the receiver app, plus the same tiny
    handler at /bench/open (no auth) and /bench/protected (`require_m2m`)."""
    from flask import g, jsonify, request

    import receiver_app
    from receiver_app import require_m2m

    app = receiver_app.create_app()

    def echo():
        body = request.get_json(silent=True) or {}
        token = g.get("m2m_token")
        return jsonify(messageReceived=body.get("message"), caller=token and token.machine_id)

    app.add_url_rule("/bench/open", "bench_open", echo, methods=["POST"])
    app.add_url_rule("/bench/protected", "bench_protected", require_m2m(echo), methods=["POST"])
    return app


# Part 1: the verifier alone


def time_per_call(fn, calls: int) -> float:
    """Seconds per call over one timed loop."""
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def bench_verifier(calls: int = 2000, rounds: int = 7) -> dict[str, float]:
    """Median per-call cost of our verifier and of a bare jwt.decode, interleaved."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = "http://127.0.0.1:8780"
    now = int(time.time())
    claims = {
        "iss": issuer, "sub": CALLER_ID, "iat": now, "nbf": now, "exp": now + 3600,
        "jti": "mt_" + "0" * 32, "aud": [RECEIVER_ID], "scopes": RECEIVER_ID,
    }  # fmt: skip
    headers = {"kid": "ins_bench", "typ": "JWT", "cat": "cl_B7d4PD333AAA"}
    token = jwt.encode(claims, key, algorithm="RS256", headers=headers)
    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)}
    jwks = {"keys": [{**jwk, "kid": "ins_bench", "alg": "RS256", "use": "sig"}]}

    config = VerifierConfig(
        api_url=issuer,
        machine_secret_key="ak_bench",  # noqa: S106  (never used: no opaque token here)
        machine_id=RECEIVER_ID,
        jwt_issuer=issuer,
        jwks_url="unused",
        jwt_cache_seconds=0,  # every call checks the signature and claims
    )
    keys = JwksCache(lambda: jwks)  # preloaded below by the warm-up call, no network
    verifier = M2MVerifier(config, keys=keys)
    remembering = M2MVerifier(replace(config, jwt_cache_seconds=60), keys=keys)
    public_key = key.public_key()

    def ours() -> Any:
        return verifier.verify(token)

    def ours_remembered() -> Any:
        return remembering.verify(token)

    def bare() -> Any:
        return jwt.decode(
            token, public_key, algorithms=["RS256"], audience=RECEIVER_ID, issuer=issuer
        )

    ours(), bare(), ours_remembered()  # warm up: keys loaded, header and token remembered
    samples: dict[str, list[float]] = {"ours": [], "bare": [], "remembered": []}
    for _ in range(rounds):
        samples["bare"].append(time_per_call(bare, calls))
        samples["ours"].append(time_per_call(ours, calls))
        samples["remembered"].append(time_per_call(ours_remembered, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


# Part 2: requests per second under gunicorn


def raw_request(port: int, path: str, token: str) -> bytes:
    body = json.dumps({"message": "Hello from the benchmark"}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def hammer(port: int, request: bytes, seconds: float, threads: int, out) -> None:
    """One load process: `threads` loops of connect/send/read-to-close for `seconds`."""
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        ok = failed = 0
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(request)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            if b"".join(chunks[:1]).startswith(b"HTTP/1.1 200"):
                ok += 1
            else:
                failed += 1
        with lock:
            counts["ok"] += ok
            counts["failed"] += failed

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put(counts)


def run_load(
    port: int, path: str, token: str, seconds: float, procs: int = 2, threads: int = 2
) -> tuple[int, float]:
    """(requests answered 200, elapsed seconds) of one load run; raises on any other answer."""
    request = raw_request(port, path, token)
    queue: Any = multiprocessing.Queue()
    loaders = [
        multiprocessing.Process(target=hammer, args=(port, request, seconds, threads, queue))
        for _ in range(procs)
    ]
    started = time.monotonic()
    for loader in loaders:
        loader.start()
    results = [queue.get(timeout=seconds + 30) for _ in loaders]
    for loader in loaders:
        loader.join(timeout=10)
    elapsed = time.monotonic() - started
    failed = sum(r["failed"] for r in results)
    if failed:
        raise RuntimeError(f"{failed} requests to {path} did not answer 200")
    return sum(r["ok"] for r in results), elapsed


class Server:
    """One app under gunicorn (or flask) as a subprocess on 127.0.0.1, logging to a file."""

    def __init__(
        self, app: str, env: dict[str, str], workdir: Path, workers: int, port: int = 0
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**base_env(), **env}
        args = server_args(app, self.port, "gunicorn", workers)
        self.log = (workdir / f"{app}-{self.port}.log").open("w")
        self.proc = subprocess.Popen(args, env=full_env, stdout=self.log, stderr=self.log)
        started = wait_until(lambda: healthz_ok(self.url) or self.proc.poll() is not None, 60)
        if not started or self.proc.poll() is not None:
            self.stop()
            tail = Path(self.log.name).read_text()[-2000:]
            raise RuntimeError(f"{app} did not start; its log ends with:\n{tail}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's processes (gunicorn master and workers)."""
        master = psutil.Process(self.proc.pid)
        total = 0.0
        for proc in [master, *master.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def mint(issuer: Server, caller_key: str, token_format: str) -> str:
    response = requests.post(
        f"{issuer.url}/v1/m2m_tokens",
        json={"token_format": token_format},
        headers={"Authorization": f"Bearer {caller_key}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["token"]


def measure(server: Server, path: str, token: str, seconds: float) -> tuple[float, float]:
    """(requests per second, server CPU seconds per request) of one load run."""
    cpu_before = server.cpu_seconds()
    count, elapsed = run_load(server.port, path, token, seconds)
    return count / elapsed, (server.cpu_seconds() - cpu_before) / count


def paired_runs(
    name: str, server: Server, token: str, goal: float | None, seconds: float, rounds: int
) -> dict[str, Any]:
    """`rounds` back-to-back pairs (open, protected) with the same token in the same header:
    the ratio of each pair cancels the background load that drifts between pairs."""
    pairs = []
    for _ in range(rounds):
        open_rate, open_cpu = measure(server, "/bench/open", token, seconds)
        rate, cpu = measure(server, "/bench/protected", token, seconds)
        pairs.append((open_rate, rate, rate / open_rate, open_cpu, cpu, open_cpu / cpu))
    medians = [statistics.median(column) for column in zip(*pairs, strict=True)]
    keys = ["open_rate", "rate", "rate_ratio", "open_cpu", "cpu", "cpu_ratio"]
    return {"name": name, "goal": goal, **dict(zip(keys, medians, strict=True))}


def bench_http(seconds: float, rounds: int, workers: int) -> list[dict[str, Any]]:
    """Each comparison of a protected variant with the open handler on the same server."""
    seed = json.loads(DEMO_SEED.read_text())
    keys = {m["id"]: m["secret_key"] for m in seed["machines"]}
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        workdir = Path(tmp)
        try:
            issuer_port = free_port()
            issuer_env = {
                "CLERK_SECRET_KEY": DEMO_SECRET_KEY,
                "MOCK_ISSUER_URL": f"http://127.0.0.1:{issuer_port}",
                "MOCK_ISSUER_DB": str(workdir / "issuer.db"),
                "MOCK_ISSUER_SEED": str(DEMO_SEED),
            }
            issuer = Server("mock_issuer", issuer_env, workdir, workers, port=issuer_port)
            servers.append(issuer)
            receiver_env = {
                "CLERK_API_URL": issuer.url,
                "CLERK_MACHINE_SECRET_KEY": keys[RECEIVER_ID],
                "CLERK_MACHINE_ID": RECEIVER_ID,
            }
            target = "scripts.bench_receiver"
            # A: nothing remembered, every token fully checked. B: the caches on.
            cold_env = {**receiver_env, "M2M_JWT_CACHE_SECONDS": "0"}
            cold = Server(target, cold_env, workdir, workers)
            servers.append(cold)
            warm_env = {**receiver_env, "M2M_VERIFY_CACHE_SECONDS": "60"}
            warm = Server(target, warm_env, workdir, workers)
            servers.append(warm)

            jwt_token = mint(issuer, keys[CALLER_ID], "jwt")
            opaque_token = mint(issuer, keys[CALLER_ID], "opaque")
            # (name, server, protected token, goal): each against /bench/open on its server
            comparisons = [
                ("A jwt, full check", cold, jwt_token, None),
                ("A opaque, no cache", cold, opaque_token, None),
                ("B jwt, remembered", warm, jwt_token, 0.85),
                ("B opaque, cached", warm, opaque_token, 0.85),
            ]
            for _, server, token, _ in comparisons:  # warm up every worker, key set and cache
                run_load(server.port, "/bench/protected", token, 0.5)
            return [
                paired_runs(name, server, token, goal, seconds, rounds)
                for name, server, token, goal in comparisons
            ]
        finally:
            for server in reversed(servers):
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each HTTP run")
    parser.add_argument("--rounds", type=int, default=7, help="open/protected pairs per variant")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    args = parser.parse_args()
    os.chdir(REPO_ROOT)

    print(f"receiver benchmark on {os.cpu_count()} cores (load generator shares them)")
    costs = bench_verifier()
    ratio = costs["ours"] / costs["bare"]
    print("\n1. JWT verification cost per call (median of 7 interleaved rounds of 2000)")
    print(f"   bare jwt.decode, preloaded key       : {costs['bare'] * 1e6:8.1f} us")
    print(f"   M2MVerifier.verify, full check       : {costs['ours'] * 1e6:8.1f} us")
    print(f"   M2MVerifier.verify, remembered token : {costs['remembered'] * 1e6:8.1f} us")
    print(f"   ratio full check / bare              : {ratio:8.2f}  {verdict(ratio, 1.3, '<=')}")

    results = bench_http(args.seconds, args.rounds, args.workers)
    print(
        f"\n2. Receiver under gunicorn, {args.workers} sync workers per server, 4 concurrent "
        f"clients; medians of {args.rounds} back-to-back pairs of {args.seconds:g}s runs "
        "(open handler, then the same handler protected; same request)"
    )
    print("   A: M2M_JWT_CACHE_SECONDS=0 (every JWT fully checked), no opaque cache")
    print("   B: defaults + M2M_VERIFY_CACHE_SECONDS=60 (the same JWT / opaque token reused)")
    print(
        f"   {'protected by':20s} {'open req/s':>10s} {'req/s':>7s} {'ratio':>6s}"
        f" {'open CPU/req':>13s} {'CPU/req':>8s} {'CPU ratio':>9s}"
    )
    for r in results:
        goal = "" if r["goal"] is None else verdict(r["rate_ratio"], r["goal"])
        print(
            f"   {r['name']:20s} {r['open_rate']:10.0f} {r['rate']:7.0f} {r['rate_ratio']:6.2f}"
            f" {r['open_cpu'] * 1e6:10.0f} us {r['cpu'] * 1e6:5.0f} us {r['cpu_ratio']:9.2f}"
            f"  {goal}"
        )
    print("   (CPU ratio = receiver CPU per open request / per protected request: the capacity")
    print("    ratio on a dedicated machine, robust to other load; opaque excludes issuer CPU)")


def verdict(value: float, goal: float, sense: str = ">=") -> str:
    met = value <= goal if sense == "<=" else value >= goal
    return f"(goal {sense} {goal}) {'met' if met else 'MISSED'}"


if __name__ == "__main__":
    main()
