"""One command runs the whole demo: the mock issuer, the receiver and the caller.

    .venv/bin/python scripts/run_demo.py            # run until Ctrl-C
    .venv/bin/python scripts/run_demo.py --once     # two calls, stop, exit 0 if both worked

Each app gets its configuration from its own `.env` when the developer made one, else from its
`.env.example` (so a fresh clone needs no manual step); URLs in those files that point at the
default demo ports (8780 issuer, 8781 caller, 8782 receiver) are rewritten to the ports chosen
here. Logs are prefixed with the app's name. Every app runs in its own process group and is
stopped with SIGTERM, then SIGKILL after a grace period, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from dotenv import dotenv_values

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_PORTS = {"issuer": 8780, "caller": 8781, "receiver": 8782}
MODULES = {"issuer": "mock_issuer", "caller": "caller_app", "receiver": "receiver_app"}
START_ORDER = ("issuer", "receiver", "caller")
# Settings a developer may have exported for other work: the demo takes them from the files.
APP_ENV_PREFIXES = ("CLERK_", "MOCK_ISSUER_", "M2M_", "RECEIVER_")
GRACE_SECONDS = 5.0
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
COLORS = {"issuer": "\033[35m", "receiver": "\033[36m", "caller": "\033[33m"}


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


@dataclass
class App:
    """One app process of the demo, in its own process group."""

    name: str
    port: int
    env: dict[str, str]
    server: str = "flask"
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        module = MODULES[self.name]
        if self.server == "gunicorn":
            return [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind",
                    f"{HOST}:{self.port}", "--no-control-socket",
                    f"{module}:create_app()"]  # fmt: skip
        return [sys.executable, "-m", "flask", "--app", module, "run", "--host", HOST,
                "--port", str(self.port), "--no-reload"]  # fmt: skip


class Console:
    """Serialised printing: app log lines with a name prefix, and the demo's own lines."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def app_line(self, name: str, line: str) -> None:
        prefix = f"{name:<8} |"
        if self.color:
            prefix = f"{COLORS.get(name, '')}{prefix}\033[0m"
        else:
            line = ANSI_ESCAPE.sub("", line)  # werkzeug colours its lines even into a pipe
        self.say(f"{prefix} {line.rstrip()}")

    def say(self, text: str = "") -> None:
        with self.lock:
            print(text, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="Run the issuer, receiver and caller demo.")
    parser.add_argument("--once", action="store_true", default=env.get("DEMO_ONCE") == "1",
                        help="make the two calls, stop everything, exit 0 only if both "
                        "succeeded (env DEMO_ONCE=1)")  # fmt: skip
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int,
                            default=int(env.get(f"DEMO_{name.upper()}_PORT", port)),
                            help=f"default {port} (env DEMO_{name.upper()}_PORT)")  # fmt: skip
    parser.add_argument("--issuer-db", default=env.get("DEMO_ISSUER_DB"),
                        help="the issuer's SQLite file (env DEMO_ISSUER_DB; default: the "
                        "issuer's own setting)")  # fmt: skip
    parser.add_argument(
        "--server",
        choices=("flask", "gunicorn"),
        default="flask",
        help="serve the apps with Flask's dev server (default) or gunicorn",
    )
    parser.add_argument("--startup-timeout", type=float, default=30.0,
                        help="seconds to wait for all three /healthz (default 30)")  # fmt: skip
    return parser.parse_args(argv)


def app_env(name: str, ports: dict[str, int], issuer_db: str | None) -> dict[str, str]:
    """The environment of one app: ours without app settings, plus its .env (or .env.example,
    always when M2M_SKIP_DOTENV=1) with demo URLs pointed at the chosen ports."""
    folder = REPO_ROOT / MODULES[name]
    use_dotenv = (folder / ".env").exists() and os.environ.get("M2M_SKIP_DOTENV") != "1"
    source = folder / ".env" if use_dotenv else folder / ".env.example"
    if not source.exists():
        raise DemoError(f"{source.relative_to(REPO_ROOT)} is missing: cannot configure {name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(APP_ENV_PREFIXES)}
    for key, value in dotenv_values(source).items():
        env[key] = _retarget(value or "", ports)
    if name == "issuer" and issuer_db:
        env["MOCK_ISSUER_DB"] = issuer_db
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        M2M_SKIP_DOTENV="1",  # the chosen file is already applied, with the URLs rewritten
    )
    env.pop("FLASK_DEBUG", None)
    return env


def _retarget(value: str, ports: dict[str, int]) -> str:
    """Point a URL at a default demo port (127.0.0.1:8780 / localhost:8780...) at the chosen one."""
    for name, default in DEFAULT_PORTS.items():
        for host in ("127.0.0.1", "localhost"):
            value = value.replace(f"//{host}:{default}", f"//{HOST}:{ports[name]}")
    return value


def check_ports_free(apps: list[App]) -> None:
    ports = [app.port for app in apps]
    if len(set(ports)) != len(ports):
        raise DemoError(f"the three apps need three different ports, got {ports}")
    for app in apps:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers do: connections of an earlier run in TIME_WAIT do not block us.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, app.port))
            except OSError:
                raise DemoError(
                    f"port {app.port} ({app.name}) is already in use: is another demo running? "
                    f"Stop it, or pick another port with --{app.name}-port or "
                    f"DEMO_{app.name.upper()}_PORT"
                ) from None


def start(app: App, console: Console) -> None:
    app.process = subprocess.Popen(
        app.command(),
        cwd=REPO_ROOT,
        env=app.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,  # its own process group: Ctrl-C reaches us, we stop it
    )
    console.say(f"==> started {app.name} on {app.url} (pid {app.process.pid})")
    app.reader = threading.Thread(target=_pump, args=(app, console), daemon=True)
    app.reader.start()


def _pump(app: App, console: Console) -> None:
    assert app.process is not None and app.process.stdout is not None
    for line in app.process.stdout:
        console.app_line(app.name, line)


def wait_healthy(apps: list[App], timeout: float) -> None:
    """Wait until every app answers GET /healthz 200; fail fast if one exits."""
    deadline = time.monotonic() + timeout
    pending = list(apps)
    while pending:
        for app in list(pending):
            assert app.process is not None
            if _exited(app):
                raise DemoError(f"{app.name} exited during start-up: see its log lines above")
            if _healthy(app.url):
                pending.remove(app)
        if pending and time.monotonic() > deadline:
            names = ", ".join(app.name for app in pending)
            raise DemoError(f"{names} did not answer /healthz within {timeout:g} s")
        if pending:
            time.sleep(0.1)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def call_send(caller: App, token_format: str, console: Console) -> bool:
    """One real GET /send on the caller; print the answer; True when it is a 200."""
    url = f"{caller.url}/send?format={token_format}"
    try:
        response = requests.get(url, timeout=30)
    except requests.RequestException as exc:
        console.say(f"==> GET {url} failed: {type(exc).__name__}")
        return False
    try:
        shown = json.dumps(response.json(), indent=2)
    except ValueError:
        shown = response.text[:500]
    console.say(f"==> GET {url} -> {response.status_code}")
    console.say("\n".join(f"    {line}" for line in shown.splitlines()))
    return response.status_code == 200


def print_urls(apps: dict[str, App], console: Console) -> None:
    issuer = apps["issuer"].url
    console.say()
    console.say("==> All three apps are up:")
    console.say(f"    issuer     {issuer}")
    if _exists(f"{issuer}/dashboard"):
        console.say(f"    dashboard  {issuer}/dashboard")
    console.say(f"    caller     {apps['caller'].url}/send   (add ?format=jwt or ?format=opaque)")
    console.say(f"    receiver   {apps['receiver'].url}/receive")


def _exists(url: str) -> bool:
    try:
        return requests.get(url, timeout=2, allow_redirects=False).status_code != 404
    except requests.RequestException:
        return False


def stop_all(apps: list[App], console: Console) -> None:
    """SIGTERM every process group, wait, then SIGKILL what is left; reap everything.
    A second Ctrl-C meanwhile is ignored so the clean-up always completes (within seconds)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Not yet reaped: the leader's pid (= its group id) cannot be reused, so signalling the
    # group is safe until we call wait().
    live = [app for app in apps if app.process is not None and app.process.returncode is None]
    for app in live:
        _signal_group(app, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline and not all(_exited(app) for app in live):
        time.sleep(0.05)
    for app in live:
        if not _exited(app):
            console.say(f"==> {app.name} ignored SIGTERM for {GRACE_SECONDS:g} s: SIGKILL")
        _signal_group(app, signal.SIGKILL)  # also any child it forked (gunicorn workers)
        app.process.wait(timeout=10)  # type: ignore[union-attr]
    for app in apps:
        if app.reader is not None:
            app.reader.join(timeout=2)
    if live:
        console.say("==> stopped " + ", ".join(app.name for app in live))


def _exited(app: App) -> bool:
    """Whether the leader has exited, without reaping it (WNOWAIT)."""
    assert app.process is not None
    try:
        info = os.waitid(os.P_PID, app.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _signal_group(app: App, sig: signal.Signals) -> None:
    assert app.process is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(app.process.pid, sig)  # its group id is its pid (start_new_session)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, console: Console) -> int:
    ports = {"issuer": args.issuer_port, "caller": args.caller_port,
             "receiver": args.receiver_port}  # fmt: skip
    apps = {
        name: App(name, ports[name], app_env(name, ports, args.issuer_db), args.server)
        for name in START_ORDER
    }
    ordered = list(apps.values())
    check_ports_free(ordered)
    try:
        for app in ordered:
            start(app, console)
        wait_healthy(ordered, args.startup_timeout)
        console.say("==> all three answer /healthz; one real call with each token format:")
        results = [call_send(apps["caller"], fmt, console) for fmt in ("opaque", "jwt")]
        print_urls(apps, console)
        if args.once:
            ok = all(results)
            console.say(f"==> --once: {'both calls succeeded' if ok else 'a call FAILED'}")
            return 0 if ok else 1
        console.say("==> Press Ctrl-C to stop all three.")
        while not any(_exited(app) for app in ordered):
            time.sleep(0.5)
        dead = next(app for app in ordered if _exited(app))
        raise DemoError(f"{dead.name} exited unexpectedly: see its log lines above")
    except KeyboardInterrupt:
        console.say()
        console.say("==> Ctrl-C: stopping all three")
        return 0
    finally:
        stop_all(ordered, console)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        return run(args, console)
    except DemoError as exc:
        console.say(f"==> demo failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
