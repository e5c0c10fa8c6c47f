"""The switch that makes a missing Node or oidc-provider fail the oidc-provider tests in CI
instead of skipping them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests import oidc_provider_server
from tests.harness import REPO_ROOT


@pytest.fixture
def not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(oidc_provider_server, "PACKAGE", tmp_path / "absent" / "package.json")


def test_a_missing_package_fails_when_ci_requires_it(not_installed):
    with pytest.raises(pytest.fail.Exception, match="M2M_REQUIRE_OIDC_PROVIDER=1 but"):
        oidc_provider_server.require_or_skip({"M2M_REQUIRE_OIDC_PROVIDER": "1"})


def test_a_missing_package_skips_otherwise(not_installed):
    with pytest.raises(pytest.skip.Exception, match="npm ci --prefix tests/oidc_provider"):
        oidc_provider_server.require_or_skip({})


def test_missing_node_is_named(monkeypatch):
    monkeypatch.setattr(oidc_provider_server.shutil, "which", lambda name: None)
    assert oidc_provider_server.missing_reason() == "node is not installed"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_installs_the_oidc_provider_before_the_suite():
    dry_run = subprocess.run(
        ["make", "-n", "-W", "tests/oidc_provider/package-lock.json", "test"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "npm ci --prefix tests/oidc_provider" in dry_run
    assert dry_run.index("npm ci") < dry_run.index("-m pytest")
