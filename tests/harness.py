"""Start the three apps as real processes for end-to-end tests, with pytest-xprocess.

Each app runs on a free loopback port with its own environment (and, for the issuer, its own
database), is considered up once `GET /healthz` answers 200, and is terminated at teardown.
Logs go to `.pytest_cache/d/.xprocess/<name>/xprocess.log`; `RunningApp.log_text()` reads them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
from xprocess import ProcessStarter

REPO_ROOT = Path(__file__).resolve().parent.parent

# Variables a developer may have exported for the demo; a test process must never inherit them.
_APP_ENV_PREFIXES = ("CLERK_", "MOCK_ISSUER_", "M2M_", "RECEIVER_")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env() -> dict[str, str]:
    """The test process's environment without any app configuration, plus what every app needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_APP_ENV_PREFIXES)}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        # Apps load `<app>/.env` with python-dotenv; a developer's own .env must not leak in.
        M2M_SKIP_DOTENV="1",
    )
    return env


def server_args(app: str, port: int, server: str, workers: int) -> list[str]:
    """The command line serving `app` on 127.0.0.1:port with the Flask dev server or gunicorn."""
    if server == "flask":
        return [sys.executable, "-m", "flask", "--app", app, "run", "--host", "127.0.0.1",
                "--port", str(port), "--no-reload"]  # fmt: skip
    if server == "gunicorn":
        # --no-control-socket: gunicorn 27 otherwise makes every instance share one socket
        # under ~/.gunicorn, and concurrent test servers take it over from each other.
        return [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind",
                f"127.0.0.1:{port}", "--graceful-timeout", "5", "--no-control-socket",
                f"{app}:create_app()"]  # fmt: skip
    raise ValueError(f"unknown server {server!r}")


def healthz_ok(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class RunningApp:
    """One app process under xprocess: where it listens, how it was started, and its log."""

    xprocess: object
    app: str
    port: int
    env: dict[str, str]
    server: str = "flask"
    workers: int = 2
    name: str = ""
    startup_timeout: float = 30
    _log_offset: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.app}-{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(str(self.xprocess.getinfo(self.name).logpath))

    @property
    def pid(self) -> int | None:
        return self.xprocess.getinfo(self.name).pid

    def start(self) -> RunningApp:
        """Start (or restart) the process and wait until /healthz answers."""
        running = self
        args = server_args(self.app, self.port, self.server, self.workers)

        class Starter(ProcessStarter):
            env = running.env
            timeout = running.startup_timeout
            terminate_on_interrupt = True

            @property
            def args(self):  # type: ignore[override]
                return args

            def startup_check(self) -> bool:
                _fail_if_exited(running)
                return healthz_ok(running.url)

        self.xprocess.ensure(self.name, Starter, restart=True)
        return self

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL) and its children."""
        info = self.xprocess.getinfo(self.name)
        if info.isrunning():
            info.terminate(timeout=10)

    def kill(self) -> None:
        """SIGKILL the process tree at once: a crash, not a shutdown."""
        pid = self.pid
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            procs = [*proc.children(recursive=True), proc]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=10)

    def restart(self) -> RunningApp:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _fail_if_exited(app: RunningApp) -> None:
    """Raise with the log tail when the process died during start-up, instead of waiting out
    the whole timeout."""
    pid = app.pid
    if pid is None:
        return
    try:
        dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        dead = True
    if dead:
        tail = "\n".join(app.log_text().splitlines()[-30:])
        raise RuntimeError(f"{app.name} exited during start-up; log tail:\n{tail}")


def start_app(
    xprocess,
    app: str,
    env: dict[str, str] | None = None,
    *,
    server: str = "flask",
    workers: int = 2,
    port: int | None = None,
) -> RunningApp:
    """Start `app` ("mock_issuer", "receiver_app" or "caller_app") and return it once healthy."""
    full_env = base_env()
    full_env.update(env or {})
    running = RunningApp(
        xprocess=xprocess,
        app=app,
        port=port or free_port(),
        env=full_env,
        server=server,
        workers=workers,
    )
    return running.start()


def wait_until(predicate, timeout: float = 10, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is truthy or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
