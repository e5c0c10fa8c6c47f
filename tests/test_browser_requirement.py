"""The switch that makes a missing Chromium fail the browser tests instead of skipping them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.browser_requirement import no_browser
from tests.harness import REPO_ROOT


@pytest.fixture
def pytester_env() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Collect (not run) tests/test_dashboard_browser.py in a fresh pytest with extra env."""

    def collect(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_dashboard_browser.py",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return collect


def outcome(environ: dict[str, str]) -> BaseException:
    """What no_browser raises (caught here, so a wrong skip cannot skip this test itself)."""
    try:
        no_browser("no Chromium found", environ=environ)
    except BaseException as exc:  # pytest's Skipped and Failed are BaseExceptions
        return exc
    raise AssertionError("no_browser returned")


@pytest.mark.parametrize("environ", [{}, {"M2M_REQUIRE_BROWSER": ""}, {"M2M_REQUIRE_BROWSER": "0"}])
def test_a_missing_browser_skips_the_module_by_default(environ):
    exc = outcome(environ)
    assert type(exc) is pytest.skip.Exception and exc.allow_module_level
    assert "browser tests skipped: no Chromium found" in str(exc)


def test_a_missing_browser_fails_when_m2m_require_browser_is_1():
    exc = outcome({"M2M_REQUIRE_BROWSER": "1"})
    assert type(exc) is pytest.fail.Exception
    assert "M2M_REQUIRE_BROWSER=1 but no Chromium found" in str(exc)


def test_the_browser_module_fails_to_collect_without_chromium_when_required(pytester_env):
    """End to end, cheaply: collect the browser module with CHROMIUM_PATH pointing nowhere."""
    result = pytester_env(CHROMIUM_PATH="/nonexistent/chromium", M2M_REQUIRE_BROWSER="1")
    assert result.returncode != 0, result.stdout
    assert "M2M_REQUIRE_BROWSER=1 but CHROMIUM_PATH='/nonexistent/chromium'" in result.stdout
