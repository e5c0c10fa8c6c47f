"""Whether a missing browser skips the browser tests or fails them: `M2M_REQUIRE_BROWSER=1`
(set by CI) turns "no Chromium" into a failure, so a broken install never passes as a skip."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest


def browser_is_required(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("M2M_REQUIRE_BROWSER", "").strip() == "1"


def no_browser(why: str, environ: Mapping[str, str] = os.environ) -> None:
    """Skip the calling test module because `why`, or fail it when a browser is required."""
    if browser_is_required(environ):
        pytest.fail(f"M2M_REQUIRE_BROWSER=1 but {why}", pytrace=False)
    pytest.skip(f"browser tests skipped: {why}", allow_module_level=True)
