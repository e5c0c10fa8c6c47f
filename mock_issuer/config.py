"""The issuer's settings: the environment variables it reads, validated once at start-up."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from flask import current_app

APP_DIR = Path(__file__).resolve().parent
N = TypeVar("N", Decimal, int)


class ConfigError(ValueError):
    """A missing or invalid setting: the message names the variable, never a secret value."""


@dataclass(frozen=True)
class Settings:
    """One field per environment variable: the field's name is the variable's, in lower case."""

    clerk_secret_key: str
    mock_issuer_url: str = "http://127.0.0.1:8780"
    mock_issuer_db: str = str(APP_DIR.parent / "instance" / "mock_issuer.db")  # Flask's instance/
    mock_issuer_seed: str = ""
    mock_issuer_retention_days: float = 30.0  # see retention.py
    mock_issuer_faults: str = ""  # JSON fault rules, parsed by faults.py
    mock_issuer_rate_limit: str = ""  # parsed by faults.py
    mock_issuer_session_secret: str = ""  # empty: derived from clerk_secret_key
    # The dashboard's cost estimate; the defaults are Clerk's list prices (wire reference).
    mock_issuer_price_creation: Decimal = Decimal("0.001")  # USD per token creation
    mock_issuer_price_verification: Decimal = Decimal("0.00001")  # USD per opaque verification
    mock_issuer_free_creations: int = 2500  # free token creations per month
    mock_issuer_free_verifications: int = 100_000  # free opaque verifications per month

    def __repr__(self) -> str:  # keep the two secrets out of logs and tracebacks
        return (
            f"Settings(mock_issuer_url={self.mock_issuer_url!r}, "
            f"mock_issuer_db={self.mock_issuer_db!r}, mock_issuer_seed={self.mock_issuer_seed!r})"
        )

    @property
    def retention_ms(self) -> int:
        return round(self.mock_issuer_retention_days * 86_400_000)


ENV_VARS = tuple(field.name.upper() for field in fields(Settings))
DEFAULTS = Settings(clerk_secret_key="")


def load_settings(env: Mapping[str, str]) -> Settings:
    """Settings from `env` (unset or empty: the default); raises ConfigError naming the bad one."""
    d = DEFAULTS
    return Settings(
        clerk_secret_key=_secret_key(env),
        mock_issuer_url=_url(env, "MOCK_ISSUER_URL", d.mock_issuer_url),
        mock_issuer_db=_text(env, "MOCK_ISSUER_DB") or d.mock_issuer_db,
        mock_issuer_seed=_text(env, "MOCK_ISSUER_SEED"),
        mock_issuer_retention_days=_days(
            env, "MOCK_ISSUER_RETENTION_DAYS", d.mock_issuer_retention_days
        ),
        mock_issuer_faults=_text(env, "MOCK_ISSUER_FAULTS"),
        mock_issuer_rate_limit=_text(env, "MOCK_ISSUER_RATE_LIMIT"),
        mock_issuer_session_secret=_text(env, "MOCK_ISSUER_SESSION_SECRET"),
        mock_issuer_price_creation=_price(
            env, "MOCK_ISSUER_PRICE_CREATION", d.mock_issuer_price_creation
        ),
        mock_issuer_price_verification=_price(
            env, "MOCK_ISSUER_PRICE_VERIFICATION", d.mock_issuer_price_verification
        ),
        mock_issuer_free_creations=_count(
            env, "MOCK_ISSUER_FREE_CREATIONS", d.mock_issuer_free_creations
        ),
        mock_issuer_free_verifications=_count(
            env, "MOCK_ISSUER_FREE_VERIFICATIONS", d.mock_issuer_free_verifications
        ),
    )


def current_settings() -> Settings:
    """The settings of the app handling this request (or CLI command)."""
    return current_app.extensions["settings"]


def _secret_key(env: Mapping[str, str]) -> str:
    if not _text(env, "CLERK_SECRET_KEY").startswith("sk_"):
        raise ConfigError(
            "CLERK_SECRET_KEY must be set to the instance secret key (sk_...) the issuer accepts;"
            " see mock_issuer/.env.example"
        )
    return _text(env, "CLERK_SECRET_KEY")


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    """An http(s) base URL with a host, without its trailing slash (never echoed: it may hold
    user:password@)."""
    value = _text(env, name)
    if not value:
        return default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host")
    return value.rstrip("/")


def _days(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of days greater than 0."""
    raw = _text(env, name)
    if not raw:
        return default
    try:
        days = float(raw)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days <= 0:
        raise ConfigError(f"{name} must be a number of days greater than 0, not {raw!r}")
    return days


def _price(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    return _not_negative(env, name, default, Decimal, "a price in USD")


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    return _not_negative(env, name, default, int, "a whole number")


def _not_negative(env: Mapping[str, str], name: str, default: N, parse: type[N], what: str) -> N:
    """`env[name]` parsed as `parse` (Decimal or int), 0 or more."""
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = parse(raw)
    except (ValueError, InvalidOperation):
        value = None
    if value is None or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be {what} of 0 or more, not {raw!r}")
    return value


def _text(env: Mapping[str, str], name: str) -> str:
    return str(env.get(name) or "").strip()
