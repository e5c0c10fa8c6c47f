"""The package as a user installs it: `pip install` of a copy of the working tree into a fresh
virtual environment, then a user's project with no conftest.py runs against it, the plugin
found through its pytest11 entry point. Offline: the dependencies are this environment's
(reached through a .pth file), so only the package itself is built and installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from m2m_harness.bad_tokens import BAD_TOKEN_KINDS
from tests.harness import REPO_ROOT
from tests.user_project import make_user_project

pytestmark = pytest.mark.e2e
NOT_SHIPPED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "*.egg-info",
    "instance",
    "reports",
    "test-artifacts",
    "*.db*",
)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def fresh_venv(path: Path) -> Path:
    """A new environment that sees this one's packages after its own (a .pth file)."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], path
    )
    (Path(site.stdout.strip()) / "borrowed_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return python


def test_pip_installs_the_package_and_a_users_tests_find_the_plugin(tmp_path) -> None:
    source = tmp_path / "m2m-reference"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SHIPPED)
    python = fresh_venv(tmp_path / "venv")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    options = ["--no-build-isolation", "--no-index", "--no-deps", "--ignore-installed"]
    installed = run([*pip, "install", "--quiet", *options, str(source)], tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]

    where = run([str(python), "-c", WHERE], tmp_path)
    assert where.returncode == 0, where.stderr[-3000:]
    assert where.stdout.split() == ["venv", "venv", "True", "True"], where.stdout

    project = make_user_project(tmp_path / "project")
    result = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{2 + len(BAD_TOKEN_KINDS) + 1} passed" in result.stdout


# Both packages come from the new environment, with the dashboard's templates and static files.
WHERE = """
import importlib.resources as res, sys, m2m_harness.plugin, mock_issuer
for module in (m2m_harness.plugin, mock_issuer):
    print("venv" if module.__file__.startswith(sys.prefix) else module.__file__)
print(res.files("mock_issuer.dashboard").joinpath("templates/dashboard/base.html").is_file())
print(res.files("mock_issuer.dashboard").joinpath("static/dashboard.css").is_file())
"""
