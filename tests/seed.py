"""The test seed: the issuer's secret key, three fixed machines, and the environment of a
seeded mock issuer, in a process or in this one (Flask test client speed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from mock_issuer import create_app

TEST_SECRET_KEY = "sk_test_pytest0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d"
SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}  # the instance's own secret key
ISSUER_URL = "http://127.0.0.1:8799"  # the JWT `iss` of in-process issuers


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


def seed_document() -> dict:
    """caller -> receiver is the only scope; outsider may talk to nobody and nobody to it."""
    scopes = {CALLER: [RECEIVER.id], RECEIVER: [], OUTSIDER: []}
    return {
        "machines": [
            {
                "id": machine.id,
                "name": machine.name,
                "secret_key": machine.secret_key,
                "default_token_ttl": 3600,
                "scoped_machines": scoped,
            }
            for machine, scoped in scopes.items()
        ]
    }


def issuer_env(workdir: Path, **extra: str) -> dict[str, str]:
    """Environment for a mock issuer with its own database and the test seed."""
    workdir.mkdir(parents=True, exist_ok=True)
    seed_path = workdir / "seed.json"
    seed_path.write_text(json.dumps(seed_document()))
    env = {
        "CLERK_SECRET_KEY": TEST_SECRET_KEY,
        "MOCK_ISSUER_DB": str(workdir / "issuer.db"),
        "MOCK_ISSUER_SEED": str(seed_path),
    }
    env.update(extra)
    return env


def make_issuer_app(workdir: Path, **config: object) -> Flask:
    """An in-process mock issuer at ISSUER_URL with its own database and the test seed;
    `config` overrides any setting."""
    settings: dict[str, object] = {
        **issuer_env(workdir, MOCK_ISSUER_URL=ISSUER_URL),
        "TESTING": True,
    }
    settings.update(config)
    return create_app(settings)
