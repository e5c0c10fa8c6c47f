"""Start Flask apps as real processes on 127.0.0.1, wait until they are healthy, stop them.

One place for what the tests, the load-test stack and the demo all need: a free port, an
environment cleaned of app settings, the command line (Flask's dev server or gunicorn), a
bounded wait for `GET /healthz` that fails with the log's last lines, and a stop that leaves no
process behind (SIGTERM to the process group, SIGKILL after a grace period).

    with AppProcess("mock_issuer", env={...}, log_path=tmp / "issuer.log") as issuer:
        requests.get(f"{issuer.url}/v1/jwks", timeout=5)

`app` is any importable Flask factory: "mock_issuer" means "mock_issuer:create_app()".
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

# Where mock_issuer, caller_app and receiver_app live: put on the apps' PYTHONPATH.
APPS_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# Settings a developer may have exported for other work: a started app never inherits them.
APP_ENV_PREFIXES = ("CLERK_", "MOCK_ISSUER_", "M2M_", "RECEIVER_", "CALLER_", "LOADTEST_")
SERVERS = ("flask", "gunicorn")
GRACE_SECONDS = 5.0
STARTUP_TIMEOUT_SECONDS = 30.0
TAIL_LINES = 30


class LaunchError(RuntimeError):
    """An app did not come up; the message names it and shows the last lines of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (as servers do, with SO_REUSEADDR:
    closed connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def local_url(port: int, host: str = HOST) -> str:
    return f"http://{host}:{port}"


def base_env() -> dict[str, str]:
    """This process's environment without app settings (nor FLASK_DEBUG, which would turn on
    the interactive debugger), plus what every app needs: the apps importable, unbuffered
    output, and no `<app>/.env` (a developer's own must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(APP_ENV_PREFIXES)}
    env.pop("FLASK_DEBUG", None)
    pythonpath = [str(APPS_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update(PYTHONPATH=os.pathsep.join(pythonpath), PYTHONUNBUFFERED="1", M2M_SKIP_DOTENV="1")
    return env


def app_target(app: str) -> str:
    """The factory call both servers understand: "pkg" -> "pkg:create_app()"."""
    return app if ":" in app else f"{app}:create_app()"


def server_command(
    app: str,
    port: int,
    server: str = "flask",
    workers: int = 2,
    threads: int = 1,
    host: str = HOST,
) -> list[str]:
    """The command line serving `app` on `host`:`port` (127.0.0.1 unless a test binds an
    address inside its own network namespace) with Flask's dev server or gunicorn."""
    target = app_target(app)
    if server == "flask":
        options = f"run --host {host} --port {port} --no-reload"
        return [sys.executable, "-m", "flask", "--app", target, *options.split()]
    if server == "gunicorn":
        # --no-control-socket: gunicorn 27 otherwise makes every instance share one socket
        # under ~/.gunicorn, and concurrent servers take it over from each other.
        options = (
            f"--workers {workers} --threads {threads} --bind {host}:{port} "
            "--graceful-timeout 5 --no-control-socket"
        )
        return [sys.executable, "-m", "gunicorn", *options.split(), target]
    raise ValueError(f"unknown server {server!r}: choose one of {', '.join(SERVERS)}")


def healthz_ok(url: str) -> bool:
    """Whether `GET {url}/healthz` answers 200 within a second."""
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def leader_exited(pid: int) -> bool:
    """Whether our child `pid` has exited, without reaping it: while it is unreaped its pid,
    which is also its process group's id, cannot be reused, so signalling the group is safe."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group led by `pid` (gunicorn's workers included)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_group_gone(pid: int, timeout: float = 10) -> bool:
    """Wait (bounded) until no process of the group led by `pid` is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(0.02)
    return False


def kill_group(pid: int) -> None:
    """SIGKILL the whole group at once (a crash, not a shutdown); reap the leader if it is
    ours and wait until every member is gone."""
    signal_group(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    wait_group_gone(pid)


def read_tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def startup_failure(name: str, what: str, tail: str) -> LaunchError:
    return LaunchError(f"{name} {what}; last lines of its log:\n{tail or '(empty)'}")


@dataclass
class AppProcess:
    """One app on 127.0.0.1:`port` in its own process group. Its output goes to `log_path`
    (appended), or else line by line to `on_line` (the demo prints it), the last lines kept."""

    app: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # over base_env()
    port: int = field(default_factory=free_port)
    server: str = "flask"
    workers: int = 2
    threads: int = 1
    log_path: Path | None = None
    on_line: Callable[[str], None] | None = field(default=None, repr=False)
    cwd: Path | None = None
    name: str = ""
    host: str = HOST  # another address only inside a test's own network namespace
    process: subprocess.Popen | None = field(default=None, repr=False)
    _tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES), repr=False
    )
    _pump: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or self.app.partition(":")[0]

    @property
    def url(self) -> str:
        return local_url(self.port, self.host)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and not leader_exited(self.process.pid)

    def command(self) -> list[str]:
        return server_command(
            self.app, self.port, self.server, self.workers, self.threads, self.host
        )

    def start(self) -> AppProcess:
        """Start the process (without waiting for it: see `wait_healthy`)."""
        if self.log_path is None:
            self._spawn(subprocess.PIPE)
            self._pump = threading.Thread(target=self._forward_output, daemon=True)
            self._pump.start()
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as log:
                self._spawn(log)
        return self

    def _spawn(self, stdout) -> None:
        self.process = subprocess.Popen(
            self.command(),
            env={**base_env(), **self.env},
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a Ctrl-C reaches us, and we stop it
        )

    def _forward_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._tail.append(line)
            if self.on_line is not None:
                self.on_line(line)

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        if self.log_path is not None:
            return read_tail(self.log_path, lines)
        return "\n".join(list(self._tail)[-lines:])

    def check_started(self) -> bool:
        """True once /healthz answers 200; LaunchError if the process has exited meanwhile."""
        if self.process is None:
            raise LaunchError(f"{self.name} was not started")
        if leader_exited(self.process.pid):
            if self._pump is not None:
                self._pump.join(timeout=2)  # its last lines are the reason
            raise startup_failure(self.name, "exited during start-up", self.log_tail())
        return healthz_ok(self.url)

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> AppProcess:
        """Wait until /healthz answers 200, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.check_started():
            if time.monotonic() > deadline:
                what = f"did not answer /healthz within {timeout:g} s on {self.url}"
                raise startup_failure(self.name, what, self.log_tail())
            time.sleep(0.1)
        return self

    def send(self, sig: signal.Signals) -> None:
        """Send `sig` to the app's whole process group (gunicorn's workers included)."""
        if self.process is not None:
            signal_group(self.process.pid, sig)

    def _finish(self) -> None:
        """SIGKILL what is left of the group, reap the leader, wait until the rest is gone."""
        if self.process is None:
            return
        self.send(signal.SIGKILL)
        self.process.wait(timeout=10)
        wait_group_gone(self.process.pid)
        if self._pump is not None and self.process.stdout is not None:
            self._pump.join(timeout=2)
            self.process.stdout.close()

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        stop_all([self], grace)

    def __enter__(self) -> AppProcess:
        start_all([self])
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_all(apps: Sequence[AppProcess], timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
    """Start every app, then wait until all are healthy (one deadline for all); on any failure
    stop them all before raising."""
    try:
        for app in apps:
            app.start()
        deadline = time.monotonic() + timeout
        for app in apps:
            app.wait_healthy(max(deadline - time.monotonic(), 0))
    except BaseException:
        stop_all(apps)
        raise


def stop_all(apps: Iterable[AppProcess], grace: float = GRACE_SECONDS) -> list[AppProcess]:
    """SIGTERM every app's process group, wait up to `grace` seconds for them to exit, then
    SIGKILL the groups (whatever ignored SIGTERM, and any child left behind) and reap them.
    Returns the apps that had to be killed."""
    live = [app for app in apps if app.process is not None and app.process.returncode is None]
    for app in live:
        app.send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(app.running for app in live):
        time.sleep(0.05)
    killed = [app for app in live if app.running]
    for app in live:
        app._finish()
    return killed
