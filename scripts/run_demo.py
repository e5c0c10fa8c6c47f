"""One command runs the whole demo: the mock issuer, the receiver and the caller.

    .venv/bin/python scripts/run_demo.py            # run until Ctrl-C
    .venv/bin/python scripts/run_demo.py --once     # two calls, stop, exit 0 if both worked
    .venv/bin/python scripts/run_demo.py --provider oauth   # both apps speak OAuth 2.0 instead

Each app gets its configuration from its own `.env` when the developer made one, else from its
`.env.example` (so a fresh clone needs no manual step); URLs in those files that point at the
default demo ports (8780 issuer, 8781 caller, 8782 receiver) are rewritten to the ports chosen
here. Logs are prefixed with the app's name. Every app runs in its own process group and is
stopped with SIGTERM, then SIGKILL after a grace period, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import requests  # noqa: E402
from dotenv import dotenv_values  # noqa: E402

from m2m_harness.launcher import (  # noqa: E402
    HOST,
    AppProcess,
    LaunchError,
    base_env,
    port_is_free,
    start_all,
    stop_all,
)

DEFAULT_PORTS = {"issuer": 8780, "caller": 8781, "receiver": 8782}
MODULES = {"issuer": "mock_issuer", "caller": "caller_app", "receiver": "receiver_app"}
START_ORDER = ("issuer", "receiver", "caller")
GRACE_SECONDS = 5.0
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
COLORS = {"issuer": "\033[35m", "receiver": "\033[36m", "caller": "\033[33m"}


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


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
    parser.add_argument(
        "--once",
        action="store_true",
        default=env.get("DEMO_ONCE") == "1",
        help="make the two calls, stop everything, exit 0 only if both succeeded (env DEMO_ONCE=1)",
    )
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(
            f"--{name}-port",
            type=int,
            default=int(env.get(f"DEMO_{name.upper()}_PORT", port)),
            help=f"default {port} (env DEMO_{name.upper()}_PORT)",
        )
    parser.add_argument(
        "--issuer-db",
        default=env.get("DEMO_ISSUER_DB"),
        help="the issuer's SQLite file (env DEMO_ISSUER_DB; default: the issuer's own setting)",
    )
    parser.add_argument(
        "--server",
        choices=("flask", "gunicorn"),
        default="flask",
        help="serve the apps with Flask's dev server (default) or gunicorn",
    )
    parser.add_argument(
        "--provider",
        choices=("clerk", "oauth"),
        default=env.get("DEMO_PROVIDER", "clerk"),
        help="clerk: Clerk's M2M API (default); oauth: M2M_PROVIDER=oauth in both apps, the mock "
        "issuer as their OAuth 2.0 authorization server (env DEMO_PROVIDER)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for all three /healthz (default 30)",
    )
    return parser.parse_args(argv)


def app_env(name: str, ports: dict[str, int], issuer_db: str | None) -> dict[str, str]:
    """The environment of one app: ours without app settings (a developer's exported ones
    included), plus its .env (or .env.example, always when M2M_SKIP_DOTENV=1) with demo URLs
    pointed at the chosen ports; the apps then skip their .env, already applied here."""
    folder = REPO_ROOT / MODULES[name]
    use_dotenv = (folder / ".env").exists() and os.environ.get("M2M_SKIP_DOTENV") != "1"
    source = folder / ".env" if use_dotenv else folder / ".env.example"
    if not source.exists():
        raise DemoError(f"{source.relative_to(REPO_ROOT)} is missing: cannot configure {name}")
    env = base_env()
    for key, value in dotenv_values(source).items():
        env[key] = _retarget(value or "", ports)
    if name == "issuer" and issuer_db:
        env["MOCK_ISSUER_DB"] = issuer_db
    return env


def use_oauth(envs: dict[str, dict[str, str]]) -> None:
    """--provider oauth: both apps in M2M_PROVIDER=oauth against the mock issuer's OAuth 2.0
    endpoints, with the machines their Clerk settings name (client id = machine id, client
    secret = machine secret key). The caller's machine id is the seed's machine with its key."""
    issuer_url = envs["issuer"].get("MOCK_ISSUER_URL") or envs["caller"]["CLERK_API_URL"]
    receiver_id = envs["receiver"].get("CLERK_MACHINE_ID", "")
    caller_key = envs["caller"].get("CLERK_MACHINE_SECRET_KEY", "")
    caller_id = _seeded_machine_id(envs["issuer"].get("MOCK_ISSUER_SEED", ""), caller_key)
    oauth = {"M2M_PROVIDER": "oauth", "OAUTH_ISSUER_URL": issuer_url, "OAUTH_AUDIENCE": receiver_id}
    envs["caller"].update(oauth, OAUTH_CLIENT_ID=caller_id, OAUTH_CLIENT_SECRET=caller_key)
    envs["receiver"].update(
        oauth,
        OAUTH_CLIENT_ID=receiver_id,  # for introspection of opaque tokens
        OAUTH_CLIENT_SECRET=envs["receiver"].get("CLERK_MACHINE_SECRET_KEY", ""),
    )


def _seeded_machine_id(seed: str, secret_key: str) -> str:
    """The id of the machine holding `secret_key` in the issuer's seed file."""
    try:
        machines = json.loads((REPO_ROOT / seed).read_text())["machines"] if seed else []
    except (OSError, ValueError, KeyError) as exc:
        raise DemoError(f"--provider oauth cannot read the issuer's seed {seed}: {exc}") from None
    for machine in machines:
        if secret_key and machine.get("secret_key") == secret_key:
            return machine["id"]
    raise DemoError(
        "--provider oauth needs the caller's machine (its CLERK_MACHINE_SECRET_KEY) in the "
        "issuer's MOCK_ISSUER_SEED, to use its id as the OAuth client id"
    )


def _retarget(value: str, ports: dict[str, int]) -> str:
    """Point a URL at a default demo port (127.0.0.1:8780 / localhost:8780...) at the chosen one."""
    for name, default in DEFAULT_PORTS.items():
        for host in ("127.0.0.1", "localhost"):
            value = value.replace(f"//{host}:{default}", f"//{HOST}:{ports[name]}")
    return value


def check_ports_free(apps: list[AppProcess]) -> None:
    ports = [app.port for app in apps]
    if len(set(ports)) != len(ports):
        raise DemoError(f"the three apps need three different ports, got {ports}")
    for app in apps:
        if not port_is_free(app.port):
            raise DemoError(
                f"port {app.port} ({app.name}) is already in use: is another demo running? "
                f"Stop it, or pick another port with --{app.name}-port or "
                f"DEMO_{app.name.upper()}_PORT"
            )


def call_send(caller: AppProcess, token_format: str, console: Console) -> bool:
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


def print_urls(apps: dict[str, AppProcess], console: Console) -> None:
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


def shut_down(apps: list[AppProcess], console: Console) -> None:
    """Stop every app (SIGTERM, then SIGKILL after a grace period) and say so. A second Ctrl-C
    meanwhile is ignored so the clean-up always completes (within seconds)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    live = [app for app in apps if app.process is not None and app.process.returncode is None]
    for app in stop_all(live, GRACE_SECONDS):
        console.say(f"==> {app.name} ignored SIGTERM for {GRACE_SECONDS:g} s: SIGKILL")
    if live:
        console.say("==> stopped " + ", ".join(app.name for app in live))


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, console: Console) -> int:
    ports = {"issuer": args.issuer_port, "caller": args.caller_port, "receiver": args.receiver_port}
    envs = {name: app_env(name, ports, args.issuer_db) for name in START_ORDER}
    if args.provider == "oauth":
        use_oauth(envs)
    apps = {
        name: AppProcess(
            MODULES[name],
            envs[name],
            ports[name],
            server=args.server,
            on_line=functools.partial(console.app_line, name),
            cwd=REPO_ROOT,
            name=name,
        )
        for name in START_ORDER
    }
    ordered = list(apps.values())
    check_ports_free(ordered)
    try:
        try:
            start_all(ordered, args.startup_timeout)
        except LaunchError as exc:
            raise DemoError(str(exc)) from None
        for app in ordered:
            console.say(f"==> started {app.name} on {app.url} (pid {app.pid})")
        console.say("==> all three answer /healthz; one real call with each token format:")
        if args.provider == "oauth":
            console.say(
                "    (M2M_PROVIDER=oauth: the issuer picks the format, the caller machine's"
                " default: JWT unless set to opaque on its dashboard page)"
            )
        results = [call_send(apps["caller"], fmt, console) for fmt in ("opaque", "jwt")]
        print_urls(apps, console)
        if args.once:
            ok = all(results)
            console.say(f"==> --once: {'both calls succeeded' if ok else 'a call FAILED'}")
            return 0 if ok else 1
        console.say("==> Press Ctrl-C to stop all three.")
        while all(app.running for app in ordered):
            time.sleep(0.5)
        dead = next(app for app in ordered if not app.running)
        raise DemoError(f"{dead.name} exited unexpectedly: see its log lines above")
    except KeyboardInterrupt:
        console.say()
        console.say("==> Ctrl-C: stopping all three")
        return 0
    finally:
        shut_down(ordered, console)


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
