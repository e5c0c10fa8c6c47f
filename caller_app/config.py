"""The caller's settings: the environment variables a user changes, checked once at start-up.

Each `Settings` field is named after its variable, lower-cased.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

from .token_client import TOKEN_FORMATS

MAX_TTL_SECONDS = 315_360_000  # Clerk's upper bound for a token lifetime
PROVIDERS = ("clerk", "oauth")  # Clerk's M2M API, or any OAuth 2.0 client-credentials server


class ConfigError(ValueError):
    """A missing or invalid setting: the message names the variable, never its secret value."""


@dataclass(frozen=True)
class Settings:
    receiver_url: str
    m2m_provider: str = "clerk"
    clerk_machine_secret_key: str = ""  # required with M2M_PROVIDER=clerk
    clerk_api_url: str = "https://api.clerk.com"
    m2m_token_format: str = "opaque"  # noqa: S105 (a format name, not a secret)
    m2m_token_ttl_seconds: int | None = 300  # None: the machine's default_token_ttl
    m2m_refresh_margin_seconds: float = 30.0
    m2m_http_timeout_seconds: float = 5.0
    m2m_issuer_max_attempts: int = 4
    m2m_issuer_retry_budget_seconds: float = 8.0
    # M2M_PROVIDER=oauth: the authorization server (discovery, or its token URL), this client,
    # and the target: audience (Auth0), resource (RFC 8707) and/or scope
    oauth_issuer_url: str | None = None
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    oauth_audience: str | None = None
    oauth_resource: str | None = None
    oauth_scope: str | None = None

    def __repr__(self) -> str:  # keep the key and the client secret out of logs and tracebacks
        where = self.clerk_api_url if self.m2m_provider == "clerk" else self.oauth_issuer_url
        return (
            f"Settings(m2m_provider={self.m2m_provider!r}, issuer={where!r}, "
            f"receiver_url={self.receiver_url!r}, m2m_token_format={self.m2m_token_format!r})"
        )


ENV_VARS = tuple(f.name.upper() for f in fields(Settings))  # every variable the caller reads
_DEFAULTS = {f.name.upper(): f.default for f in fields(Settings)}  # by variable name


def load_settings(env: Mapping[str, str]) -> Settings:
    """Settings from `env`; raises ConfigError naming the bad variable."""
    ttl = _ttl(env)
    provider = _text(env, "M2M_PROVIDER") or _DEFAULTS["M2M_PROVIDER"]
    if provider not in PROVIDERS:
        raise ConfigError(f"M2M_PROVIDER must be clerk or oauth, not {provider!r}")
    key = _machine_secret_key(env)
    oauth = _oauth_settings(env)
    if provider == "clerk" and not key:
        raise ConfigError("CLERK_MACHINE_SECRET_KEY is not set (see caller_app/.env.example)")
    if provider == "oauth":
        _check_oauth(oauth)
    return Settings(
        m2m_provider=provider,
        clerk_api_url=_url(env, "CLERK_API_URL", default=_DEFAULTS["CLERK_API_URL"]),
        clerk_machine_secret_key=key,
        receiver_url=_url(env, "RECEIVER_URL"),
        m2m_token_format=_token_format(env),
        m2m_token_ttl_seconds=ttl,
        m2m_refresh_margin_seconds=_refresh_margin(env, ttl),
        m2m_http_timeout_seconds=_float(env, "M2M_HTTP_TIMEOUT_SECONDS", low=0.1, high=60),
        m2m_issuer_max_attempts=_int(env, "M2M_ISSUER_MAX_ATTEMPTS", low=1, high=10),
        m2m_issuer_retry_budget_seconds=_float(
            env, "M2M_ISSUER_RETRY_BUDGET_SECONDS", low=0, high=120
        ),
        **oauth,
    )


def _oauth_settings(env: Mapping[str, str]) -> dict[str, str | None]:
    """The OAUTH_* fields, read whatever the provider (unset or blank is None)."""
    urls = {"oauth_issuer_url", "oauth_token_url"}
    values: dict[str, str | None] = {}
    for field in fields(Settings):
        if field.name.startswith("oauth_"):
            name = field.name.upper()
            text = _text(env, name) or None
            values[field.name] = _url(env, name) if text and field.name in urls else text
    return values


def _check_oauth(oauth: Mapping[str, str | None]) -> None:
    """M2M_PROVIDER=oauth needs one way to the token endpoint and the client's credentials."""
    if bool(oauth["oauth_issuer_url"]) == bool(oauth["oauth_token_url"]):
        raise ConfigError(
            "M2M_PROVIDER=oauth needs exactly one of OAUTH_ISSUER_URL (discovery) and "
            "OAUTH_TOKEN_URL"
        )
    for name in ("oauth_client_id", "oauth_client_secret"):
        if not oauth[name]:
            raise ConfigError(f"M2M_PROVIDER=oauth needs {name.upper()}")


def _machine_secret_key(env: Mapping[str, str]) -> str:
    """The Clerk machine key when set (required by load_settings only for M2M_PROVIDER=clerk)."""
    key = _text(env, "CLERK_MACHINE_SECRET_KEY")
    if not key:
        return ""
    if not key.startswith("ak_"):
        raise ConfigError(
            "CLERK_MACHINE_SECRET_KEY must be this machine's secret key (it starts with ak_); "
            "an instance key (sk_...) cannot create M2M tokens"
        )
    return key


def _token_format(env: Mapping[str, str]) -> str:
    token_format = _text(env, "M2M_TOKEN_FORMAT") or _DEFAULTS["M2M_TOKEN_FORMAT"]
    if token_format not in TOKEN_FORMATS:
        raise ConfigError(f"M2M_TOKEN_FORMAT must be opaque or jwt, not {token_format!r}")
    return token_format


def _ttl(env: Mapping[str, str]) -> int | None:
    """The lifetime to ask for; set but empty means None: the machine's default_token_ttl."""
    if "M2M_TOKEN_TTL_SECONDS" in env and not _text(env, "M2M_TOKEN_TTL_SECONDS"):
        return None
    return _int(env, "M2M_TOKEN_TTL_SECONDS", low=1, high=MAX_TTL_SECONDS)


def _refresh_margin(env: Mapping[str, str], ttl: int | None) -> float:
    name = "M2M_REFRESH_MARGIN_SECONDS"
    margin = _float(env, name, low=0, high=MAX_TTL_SECONDS)
    if ttl is not None and margin >= ttl:
        raise ConfigError(
            f"{name} ({margin:g}) must be smaller than M2M_TOKEN_TTL_SECONDS ({ttl}), "
            "or no token would ever be reused"
        )
    return margin


def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """An http(s) base URL with a host, to which a path such as /receive can be appended.
    Errors never repeat the value: a URL may hold credentials (user:password@)."""
    value = _text(env, name) or default
    if not value:
        raise ConfigError(f"{name} is not set (see caller_app/.env.example)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{name} must be an http:// or https:// URL")
    if not parts.hostname:
        raise ConfigError(f"{name} must name a host, as in http://127.0.0.1:8782")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when asked for it)
    except ValueError:
        raise ConfigError(f"{name} has an invalid port") from None
    if parts.query or parts.fragment:
        raise ConfigError(f"{name} must not have a query or fragment")
    return value.rstrip("/")


def _int(env: Mapping[str, str], name: str, *, low: int, high: int) -> int:
    """`env[name]` as a whole number in low..high; unset or empty means the default."""
    raw = _text(env, name)
    if not raw:
        return _DEFAULTS[name]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _float(env: Mapping[str, str], name: str, *, low: float, high: float) -> float:
    """`env[name]` as a finite number of seconds in low..high; unset or empty means the default."""
    raw = _text(env, name)
    if not raw:
        return _DEFAULTS[name]
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number of seconds, not {raw!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g} seconds, not {raw}")
    return value


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()
