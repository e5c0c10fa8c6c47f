"""The caller's settings, read from the environment and validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_FORMATS = ("opaque", "jwt")
MAX_TTL_SECONDS = 315_360_000  # Clerk's upper bound for a token lifetime


class ConfigError(ValueError):
    """A missing or invalid setting: the message names the variable, never its secret value."""


@dataclass(frozen=True)
class Settings:
    clerk_api_url: str
    machine_secret_key: str
    receiver_url: str
    token_format: str = "opaque"  # noqa: S105 (a format name, not a secret)
    ttl_seconds: int | None = 300
    refresh_margin_seconds: float = 30.0
    http_timeout_seconds: float = 5.0
    issuer_max_attempts: int = 4
    issuer_retry_budget_seconds: float = 8.0

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return (
            f"Settings(clerk_api_url={self.clerk_api_url!r}, receiver_url={self.receiver_url!r}, "
            f"token_format={self.token_format!r}, ttl_seconds={self.ttl_seconds!r})"
        )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: os.environ); raises ConfigError naming the bad variable."""
    env = os.environ if env is None else env
    key = _required(env, "CLERK_MACHINE_SECRET_KEY")
    if not key.startswith("ak_"):
        raise ConfigError(
            "CLERK_MACHINE_SECRET_KEY must be this machine's secret key (it starts with ak_); "
            "an instance key (sk_...) cannot create M2M tokens"
        )
    token_format = env.get("M2M_TOKEN_FORMAT", "").strip() or "opaque"
    if token_format not in TOKEN_FORMATS:
        raise ConfigError(f"M2M_TOKEN_FORMAT must be opaque or jwt, not {token_format!r}")
    ttl = _number(env, "M2M_TOKEN_TTL_SECONDS", int, default=300, allow_empty=True)
    if ttl is not None and not 1 <= ttl <= MAX_TTL_SECONDS:
        raise ConfigError(f"M2M_TOKEN_TTL_SECONDS must be between 1 and {MAX_TTL_SECONDS}")
    margin = _number(env, "M2M_REFRESH_MARGIN_SECONDS", float, default=30.0)
    if margin < 0 or (ttl is not None and margin >= ttl):
        raise ConfigError(
            f"M2M_REFRESH_MARGIN_SECONDS ({margin:g}) must be at least 0 and smaller than "
            f"M2M_TOKEN_TTL_SECONDS ({ttl}), or no token would ever be reused"
        )
    timeout = _number(env, "M2M_HTTP_TIMEOUT_SECONDS", float, default=5.0)
    attempts = _number(env, "M2M_ISSUER_MAX_ATTEMPTS", int, default=4)
    budget = _number(env, "M2M_ISSUER_RETRY_BUDGET_SECONDS", float, default=8.0)
    if timeout <= 0 or attempts < 1 or budget < 0:
        raise ConfigError(
            "M2M_HTTP_TIMEOUT_SECONDS must be > 0, M2M_ISSUER_MAX_ATTEMPTS >= 1 and "
            "M2M_ISSUER_RETRY_BUDGET_SECONDS >= 0"
        )
    return Settings(
        clerk_api_url=_url(env, "CLERK_API_URL", default="https://api.clerk.com"),
        machine_secret_key=key,
        receiver_url=_url(env, "RECEIVER_URL"),
        token_format=token_format,
        ttl_seconds=ttl,
        refresh_margin_seconds=margin,
        http_timeout_seconds=timeout,
        issuer_max_attempts=attempts,
        issuer_retry_budget_seconds=budget,
    )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set (see caller_app/.env.example)")
    return value


def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip() or default
    if not value:
        raise ConfigError(f"{name} is not set (see caller_app/.env.example)")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/")


def _number(env, name, kind, *, default, allow_empty=False):
    """`env[name]` parsed as `kind`; missing means `default`; empty means None if allowed
    (for the TTL: empty = the machine's default_token_ttl)."""
    if name not in env:
        return default
    raw = env[name].strip()
    if not raw:
        if allow_empty:
            return None
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
