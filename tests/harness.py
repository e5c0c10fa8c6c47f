"""Start the three apps as real processes for end-to-end tests, with pytest-xprocess.

A thin adapter over `m2m_harness.launcher` (which builds the command line and the clean
environment, and probes /healthz): xprocess starts each app in its own process group, names
it (a process left by an interrupted session under the same name is stopped first) and keeps
its log under `.pytest_cache/d/.xprocess/<name>/xprocess.log`, each start after a
`XPROCESS_BLOCK_DELIMITER` line; `RunningApp.log_text()` reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from xprocess import ProcessStarter

from m2m_harness.launcher import (
    APPS_ROOT,
    STARTUP_TIMEOUT_SECONDS,
    base_env,
    free_port,
    healthz_ok,
    kill_group,
    leader_exited,
    local_url,
    read_tail,
    server_command,
    startup_failure,
)

REPO_ROOT = APPS_ROOT
__all__ = ["REPO_ROOT", "RunningApp", "base_env", "free_port", "start_app", "wait_until"]


@dataclass
class RunningApp:
    """One app process under xprocess: where it listens, how it was started, and its log."""

    xprocess: object
    app: str
    port: int
    env: dict[str, str] = field(repr=False)  # the whole environment, base_env() included
    server: str = "flask"
    workers: int = 2
    name: str = ""
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.app}-{self.port}"

    @property
    def url(self) -> str:
        return local_url(self.port)

    @property
    def log_path(self) -> Path:
        return Path(str(self.xprocess.getinfo(self.name).logpath))

    @property
    def pid(self) -> int | None:
        return self.xprocess.getinfo(self.name).pid

    def start(self) -> RunningApp:
        """Start (or restart) the process and wait until /healthz answers; LaunchError with
        the log's last lines if it exits or stays unhealthy past `startup_timeout`."""
        running = self

        class Starter(ProcessStarter):
            env = running.env
            timeout = running.startup_timeout
            terminate_on_interrupt = True
            args = server_command(running.app, running.port, running.server, running.workers)

            def startup_check(self) -> bool:
                if running.pid is not None and leader_exited(running.pid):
                    raise startup_failure(running.name, "exited during start-up", running.tail())
                return healthz_ok(running.url)

        try:
            self.xprocess.ensure(self.name, Starter, restart=True)
        except TimeoutError:
            what = f"did not answer /healthz within {self.startup_timeout:g} s on {self.url}"
            raise startup_failure(self.name, what, self.tail()) from None
        return self

    def stop(self) -> None:
        """Terminate the process tree (SIGTERM, then SIGKILL) and reap it."""
        info = self.xprocess.getinfo(self.name)
        if info.isrunning():
            info.terminate(timeout=10)

    def kill(self) -> None:
        """SIGKILL the process group at once: a crash, not a shutdown."""
        if self.pid is not None:
            kill_group(self.pid)

    def restart(self) -> RunningApp:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self) -> str:
        """The last lines of this start's log."""
        return read_tail(self.log_path)


def start_app(
    xprocess,
    app: str,
    env: dict[str, str] | None = None,
    *,
    server: str = "flask",
    workers: int = 2,
    port: int | None = None,
) -> RunningApp:
    """Start `app` (a package with create_app(), e.g. "mock_issuer") and return it once healthy."""
    full_env = {**base_env(), **(env or {})}
    running = RunningApp(xprocess, app, port or free_port(), full_env, server, workers)
    return running.start()


def wait_until(predicate, timeout: float = 10, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is truthy or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
