"""Shared fixtures: real app processes (harness) started with the test seed (tests/seed.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points

import pytest

from tests.harness import RunningApp, free_port, start_app
from tests.seed import issuer_env

# pytester runs the plugin's own tests. The plugin is this repository's m2m_harness.plugin,
# unless the package is installed: then its `m2m` pytest11 entry point has registered it.
PLUGIN = "m2m_harness.plugin"
pytest_plugins = ["pytester", *([] if entry_points(group="pytest11", name="m2m") else [PLUGIN])]


@pytest.fixture
def start(xprocess) -> Iterator[Callable[..., RunningApp]]:
    """Start any app for this test only: `start("receiver_app", env={...}, server="gunicorn")`.
    Every process started through it is stopped when the test ends."""
    started: list[RunningApp] = []

    def _start(app: str, env: dict[str, str] | None = None, **kwargs) -> RunningApp:
        running = start_app(xprocess, app, env, **kwargs)
        started.append(running)
        return running

    yield _start
    for running in reversed(started):
        running.stop()


@pytest.fixture
def start_issuer(start, tmp_path) -> Callable[..., RunningApp]:
    """Start a seeded mock issuer with a fresh database for this test only."""

    def _start_issuer(server: str = "flask", port: int | None = None, **extra_env: str):
        port = port or free_port()
        env = issuer_env(tmp_path / f"issuer-{port}", MOCK_ISSUER_URL=f"http://127.0.0.1:{port}")
        env.update(extra_env)
        return start("mock_issuer", env, server=server, port=port)

    return _start_issuer


@pytest.fixture(scope="session")
def issuer(xprocess, tmp_path_factory) -> Iterator[RunningApp]:
    """One seeded mock issuer shared by the whole session, for tests that only add state."""
    port = free_port()
    env = issuer_env(tmp_path_factory.mktemp("issuer"), MOCK_ISSUER_URL=f"http://127.0.0.1:{port}")
    running = start_app(xprocess, "mock_issuer", env, port=port)
    yield running
    running.stop()
