"""Shared fixtures: the test seed (fixed machines and keys) and real app processes (harness)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import RunningApp, free_port, start_app

TEST_SECRET_KEY = "sk_test_pytest0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d"


@dataclass(frozen=True)
class SeedMachine:
    id: str
    name: str
    secret_key: str


CALLER = SeedMachine("mch_testcaller00000000000000000", "test-caller", "ak_testcaller" + "1" * 32)
RECEIVER = SeedMachine(
    "mch_testreceiver000000000000000", "test-receiver", "ak_testreceiver" + "2" * 30
)
OUTSIDER = SeedMachine(
    "mch_testoutsider000000000000000", "test-outsider", "ak_testoutsider" + "3" * 30
)


def test_seed() -> dict:
    """caller -> receiver is the only scope; outsider may talk to nobody and nobody to it."""
    return {
        "machines": [
            {
                "id": CALLER.id,
                "name": CALLER.name,
                "secret_key": CALLER.secret_key,
                "default_token_ttl": 3600,
                "scoped_machines": [RECEIVER.id],
            },
            {
                "id": RECEIVER.id,
                "name": RECEIVER.name,
                "secret_key": RECEIVER.secret_key,
                "default_token_ttl": 3600,
                "scoped_machines": [],
            },
            {
                "id": OUTSIDER.id,
                "name": OUTSIDER.name,
                "secret_key": OUTSIDER.secret_key,
                "default_token_ttl": 3600,
                "scoped_machines": [],
            },
        ]
    }


test_seed.__test__ = False  # a helper, not a test


def issuer_env(workdir: Path, port: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for a mock issuer with its own database and the test seed."""
    workdir.mkdir(parents=True, exist_ok=True)
    seed_path = workdir / "seed.json"
    seed_path.write_text(json.dumps(test_seed()))
    env = {
        "CLERK_SECRET_KEY": TEST_SECRET_KEY,
        "MOCK_ISSUER_DB": str(workdir / "issuer.db"),
        "MOCK_ISSUER_SEED": str(seed_path),
    }
    env.update(extra)
    return env


IN_PROCESS_ISSUER_URL = "http://127.0.0.1:8799"  # the JWT `iss` of in-process issuers


def make_issuer_app(workdir: Path, **config: object):
    """An in-process mock issuer (Flask test client speed) with its own database and the test
    seed; `config` overrides any setting."""
    from mock_issuer import create_app

    settings: dict[str, object] = {
        **issuer_env(workdir, MOCK_ISSUER_URL=IN_PROCESS_ISSUER_URL),
        "TESTING": True,
    }
    settings.update(config)
    return create_app(settings)


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
