"""Each app's README configuration table, its `.env.example` and its `load_settings` agree on
exactly the same environment variables, the ones named by `<app>.config.ENV_VARS`: the caller,
the receiver and the mock issuer alike."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

import pytest
from dotenv import dotenv_values

from tests.harness import REPO_ROOT

APPS = ["caller_app", "receiver_app", "mock_issuer"]


class RecordingEnv(dict):
    """An environment that remembers every variable name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def readme_variables(app: str) -> list[str]:
    """The first column of the README's configuration table."""
    lines = (REPO_ROOT / app / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lower().startswith("| variable |"))
    names = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        names.append(re.fullmatch(r"\| `([A-Z][A-Z0-9_]*)` \|.*", line).group(1))
    return names


def env_example(app: str) -> dict[str, str]:
    values = dotenv_values(REPO_ROOT / app / ".env.example")
    return {name: value or "" for name, value in values.items()}


def example_variables(app: str) -> Iterable[str]:
    """Every variable `.env.example` sets or shows commented out."""
    text = (REPO_ROOT / app / ".env.example").read_text()
    return re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


@pytest.mark.parametrize("app", APPS)
def test_readme_table_lists_exactly_the_variables_the_app_reads(app):
    config = importlib.import_module(f"{app}.config")
    documented = readme_variables(app)
    assert len(documented) == len(set(documented))  # none listed twice
    assert set(documented) == set(config.ENV_VARS)


@pytest.mark.parametrize("app", APPS)
def test_env_example_shows_exactly_the_variables_the_app_reads(app):
    config = importlib.import_module(f"{app}.config")
    assert set(example_variables(app)) == set(config.ENV_VARS)


@pytest.mark.parametrize("app", APPS)
def test_load_settings_reads_exactly_env_vars_and_the_example_loads(app):
    config = importlib.import_module(f"{app}.config")
    env = RecordingEnv(env_example(app))
    settings = config.load_settings(env)  # the demo values make a valid configuration
    assert env.read == set(config.ENV_VARS)
    assert [name.lower() for name in config.ENV_VARS] == list(vars(settings))
