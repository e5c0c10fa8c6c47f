"""Configuration from the environment and `mock_issuer/.env` (python-dotenv)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

APP_DIR = Path(__file__).resolve().parent

DEFAULT_URL = "http://127.0.0.1:8780"
MAX_BODY_BYTES = 64 * 1024
DEFAULT_RETENTION_DAYS = 30


def load_env() -> None:
    """Load `mock_issuer/.env` without overriding real environment variables, unless
    `M2M_SKIP_DOTENV=1` (the test harness sets it so a developer's .env never leaks in)."""
    if os.environ.get("M2M_SKIP_DOTENV") != "1":
        load_dotenv(APP_DIR / ".env", override=False)


def retention_days(value: object) -> float:
    """MOCK_ISSUER_RETENTION_DAYS as a number of days > 0 (empty: the default, 30)."""
    if value in (None, ""):
        return float(DEFAULT_RETENTION_DAYS)
    try:
        days = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        days = math.nan
    if isinstance(value, bool) or not math.isfinite(days) or days <= 0:
        raise RuntimeError(
            f"MOCK_ISSUER_RETENTION_DAYS must be a number of days greater than 0, not {value!r}"
        )
    return days


def from_env(instance_path: str) -> dict[str, Any]:
    """The app's settings, named as in the environment."""
    return {
        "CLERK_SECRET_KEY": os.environ.get("CLERK_SECRET_KEY", ""),
        "MOCK_ISSUER_URL": os.environ.get("MOCK_ISSUER_URL", DEFAULT_URL).rstrip("/"),
        "MOCK_ISSUER_DB": os.environ.get("MOCK_ISSUER_DB")
        or str(Path(instance_path) / "mock_issuer.db"),
        "MOCK_ISSUER_SEED": os.environ.get("MOCK_ISSUER_SEED", ""),
        # Days to keep expired or revoked opaque tokens and usage records: see retention.py.
        "MOCK_ISSUER_RETENTION_DAYS": os.environ.get("MOCK_ISSUER_RETENTION_DAYS", ""),
        "MAX_CONTENT_LENGTH": MAX_BODY_BYTES,
        # Fault injection and rate-limit emulation (ours, off by default): see faults.py.
        "MOCK_ISSUER_FAULTS": os.environ.get("MOCK_ISSUER_FAULTS", ""),
        "MOCK_ISSUER_RATE_LIMIT": os.environ.get("MOCK_ISSUER_RATE_LIMIT", ""),
    }
