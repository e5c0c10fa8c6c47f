"""Run a load-test profile against a throwaway local stack, then stop everything.

Starts the mock issuer, the receiver and the caller under gunicorn (several workers each) on free
127.0.0.1 ports, with a temporary database and a seed made of fresh random keys (caller ->
receiver is the only scope; an outsider machine has none), runs Locust headless with reports
under reports/<profile>/, and returns Locust's exit code (the gate's verdict).

    python -m loadtest.stack smoke                       # about 20 s in all
    python -m loadtest.stack rotation                    # ramp, spike, key rotation (~75 s)
    python -m loadtest.stack distributed                 # master + 2 workers (--processes 2)
    python -m loadtest.stack long                        # 5 minutes
    python -m loadtest.stack smoke -- --p95-ms 1         # extra options go to Locust
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from m2m_harness.launcher import AppProcess, base_env, free_port, start_all, stop_all

REPO_ROOT = Path(__file__).resolve().parent.parent
LOADTEST_DIR = REPO_ROOT / "loadtest"
RECEIVER_LEEWAY_S = 5  # the receiver verifier's default clock leeway (a constructor default)
# One app under gunicorn (scripts/bench.py imports it by this name), and this process's
# environment without app settings (the locust runs get it too).
Server = AppProcess
clean_env = base_env


@dataclass(frozen=True)
class Machine:
    id: str
    name: str
    secret_key: str


@dataclass(frozen=True)
class Seed:
    """Fresh random keys for one run: nothing here is reused anywhere."""

    instance_secret_key: str
    caller: Machine
    receiver: Machine
    outsider: Machine

    @classmethod
    def random(cls) -> Seed:
        def machine(name: str) -> Machine:
            return Machine(
                id=f"mch_load{name}".ljust(31, "0"),
                name=f"load-{name}",
                secret_key=f"ak_load{name}{secrets.token_hex(16)}",
            )

        return cls(
            instance_secret_key=f"sk_test_load{secrets.token_hex(16)}",
            caller=machine("caller"),
            receiver=machine("receiver"),
            outsider=machine("outsider"),
        )

    def as_json(self) -> dict:
        def entry(m: Machine, scoped: list[str]) -> dict:
            return {
                "id": m.id,
                "name": m.name,
                "secret_key": m.secret_key,
                "default_token_ttl": 3600,
                "scoped_machines": scoped,
            }

        return {
            "machines": [
                entry(self.caller, [self.receiver.id]),
                entry(self.receiver, []),
                entry(self.outsider, []),
            ]
        }


@dataclass
class Stack:
    """Issuer, receiver and caller on loopback, wired to each other with one random seed."""

    workdir: Path
    workers: int = 2
    threads: int = 1
    receiver_env: dict[str, str | None] = field(default_factory=dict)
    receiver_target: str = ""
    seed: Seed = field(default_factory=Seed.random)
    servers: dict[str, Server] = field(default_factory=dict)
    host: str = "127.0.0.1"  # where every server binds (tests/test_loadtest_netns.py: not loopback)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        issuer_port = free_port()
        issuer_url = f"http://{self.host}:{issuer_port}"
        seed_path = self.workdir / "seed.json"
        seed_path.write_text(json.dumps(self.seed.as_json()))
        issuer_env = {
            "CLERK_SECRET_KEY": self.seed.instance_secret_key,
            "MOCK_ISSUER_URL": issuer_url,
            "MOCK_ISSUER_DB": str(self.workdir / "issuer.db"),
            "MOCK_ISSUER_SEED": str(seed_path),
        }
        self.servers["issuer"] = self._server("mock_issuer", issuer_port, issuer_env)
        self.servers["receiver"] = self.receiver_server(self.receiver_env, self.receiver_target)
        receiver_url = self.servers["receiver"].url
        caller_env = {
            "CLERK_API_URL": issuer_url,
            "CLERK_MACHINE_SECRET_KEY": self.seed.caller.secret_key,
            "RECEIVER_URL": receiver_url,
        }
        self.servers["caller"] = self._server("caller_app", free_port(), caller_env)

    def _server(self, app: str, port: int, env: dict[str, str], target: str = "") -> Server:
        """`app` under gunicorn, or `target` ("module:factory()") in its place."""
        log_path = self.workdir / f"{app}-{port}.log"
        return Server(
            target or app,
            env,
            port,
            server="gunicorn",
            workers=self.workers,
            threads=self.threads,
            log_path=log_path,
            cwd=REPO_ROOT,
            name=app,
            host=self.host,
        )

    def receiver_server(self, extra_env: dict[str, str | None], target: str = "") -> Server:
        """A receiver wired to this stack's issuer; `extra_env` tunes it (e.g. its cache; None
        leaves a variable unset, so the receiver's default applies) and `target` may serve it
        through another factory (the benchmark's)."""
        issuer_url = self.servers["issuer"].url
        env = {
            "CLERK_API_URL": issuer_url,
            "CLERK_MACHINE_SECRET_KEY": self.seed.receiver.secret_key,
            "CLERK_MACHINE_ID": self.seed.receiver.id,
            # Every JWT's signature is checked: with the verified-token memo (default 60 s) a
            # token presented again is a memo hit, and the rotation profile would not prove that
            # tokens signed by the old key still verify after the rotation.
            "M2M_JWT_CACHE_SECONDS": "0",
            **extra_env,
        }
        env = {name: value for name, value in env.items() if value is not None}
        port = free_port()
        # prometheus-client's multiprocess mode: /metrics adds up every gunicorn worker.
        metrics_dir = self.workdir / f"receiver-metrics-{port}"
        metrics_dir.mkdir()
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        return self._server("receiver_app", port, env, target)

    def start(self) -> Stack:
        start_all(list(self.servers.values()))
        return self

    def stop(self) -> None:
        stop_all(self.servers.values())

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def locust_env(self) -> dict[str, str]:
        """Where the locustfile aims and with which keys (env only: keys stay off argv)."""
        return {
            "LOADTEST_ISSUER_URL": self.servers["issuer"].url,
            "LOADTEST_RECEIVER_URL": self.servers["receiver"].url,
            "LOADTEST_CALLER_URL": self.servers["caller"].url,
            "LOADTEST_CALLER_SECRET_KEY": self.seed.caller.secret_key,
            "LOADTEST_OUTSIDER_SECRET_KEY": self.seed.outsider.secret_key,
            "CLERK_SECRET_KEY": self.seed.instance_secret_key,
            "LOADTEST_EXPIRED_GRACE_S": str(RECEIVER_LEEWAY_S + 1),
        }


@dataclass(frozen=True)
class Profile:
    """A bounded Locust run: users, spawn rate, run time, and which locustfiles."""

    users: int
    spawn_rate: float
    run_time: str
    shape: bool = False
    processes: int = 0
    extra: tuple[str, ...] = ()


PROFILES = {
    # ~20 s with start-up: every user class, a handful of users.
    "smoke": Profile(users=5, spawn_rate=5, run_time="12s"),
    # Ramp, spike and a signing-key rotation mid-run: zero JWT verification failures required.
    "rotation": Profile(users=20, spawn_rate=20, run_time="60s", shape=True),
    # The same traffic from a master and two worker processes.
    "distributed": Profile(users=10, spawn_rate=10, run_time="20s", processes=2),
    # A longer soak with the ramp/spike/rotation shape.
    "long": Profile(users=40, spawn_rate=40, run_time="5m", shape=True),
}


def locust_command(profile: Profile, report_dir: Path, extra: list[str]) -> list[str]:
    files = ["loadtest/locustfile.py"] + (["loadtest/rotation_shape.py"] if profile.shape else [])
    args = [sys.executable, "-m", "locust", "--config", str(LOADTEST_DIR / "locust.conf")]
    args += ["-f", ",".join(files), "--headless", "-u", str(profile.users)]
    args += ["-r", str(profile.spawn_rate), "-t", profile.run_time]
    args += ["--csv", str(report_dir / "locust"), "--html", str(report_dir / "report.html")]
    if profile.processes:
        args += ["--processes", str(profile.processes), *master_port_args()]
    return args + list(profile.extra) + extra


def master_port_args() -> list[str]:
    """A free master port for one distributed run. With Locust's fixed default (5557) a second
    run on the machine fails to bind and exits 1 without a verdict, while its workers join and
    report to the first run's master."""
    port = str(free_port())
    return ["--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port]


def run_profile(name: str, extra: list[str], workers: int, reports: Path) -> int:
    profile = PROFILES[name]
    report_dir = reports / name
    report_dir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="m2m-loadtest-") as tmp,
        Stack(Path(tmp), workers=workers) as stack,
    ):
        print(
            f"loadtest: stack up ({workers} gunicorn workers per app): "
            + ", ".join(f"{name}={server.url}" for name, server in stack.servers.items()),
            flush=True,
        )
        command = locust_command(profile, report_dir, extra)
        env = {**clean_env(), **stack.locust_env()}
        code = subprocess.call(command, env=env, cwd=REPO_ROOT)
        print(f"loadtest: reports in {report_dir.relative_to(REPO_ROOT)}/", flush=True)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", choices=sorted(PROFILES), nargs="?", default="smoke")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app")
    parser.add_argument("--reports", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument("locust_args", nargs="*", help="after --: extra Locust options")
    args = parser.parse_args(argv)
    return run_profile(args.profile, args.locust_args, args.workers, args.reports.resolve())


if __name__ == "__main__":
    sys.exit(main())
