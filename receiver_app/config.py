"""Receiver configuration: environment variables (and `receiver_app/.env`) checked at start-up.

A wrong or missing value stops the app with a message naming the variable; secret values are
never repeated in that message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .jwks import StaticKey
from .verifier import MAX_LEEWAY_SECONDS, VerifierConfig

ISSUER_TIMEOUT_RANGE = (0.1, 60.0)  # seconds: less fails healthy issuers, more piles up workers

# Every variable the receiver reads, with its default (None: required or optional without one).
SETTINGS: dict[str, str | None] = {
    "CLERK_API_URL": None,
    "CLERK_MACHINE_SECRET_KEY": None,
    "CLERK_MACHINE_ID": None,
    "CLERK_JWKS_URL": None,
    "CLERK_JWT_KEY": None,
    "CLERK_JWT_ISSUER": None,
    "M2M_VERIFY_CACHE_SECONDS": "0",
    "M2M_JWT_CACHE_SECONDS": "60",
    "M2M_ALLOWED_CALLERS": None,
    "M2M_JWT_AUDIENCE_REQUIRED": "true",
    "M2M_JWT_LEEWAY_SECONDS": str(MAX_LEEWAY_SECONDS),
    "M2M_ISSUER_TIMEOUT_SECONDS": "5",
    "M2M_JWKS_LIFESPAN_SECONDS": "300",
    "M2M_JWKS_COOLDOWN_SECONDS": "30",
}

_MACHINE_ID = re.compile(r"mch_[A-Za-z0-9_]+")


class ConfigError(RuntimeError):
    """The receiver cannot start with this configuration."""


def settings_from(env: Mapping[str, str]) -> dict[str, str | None]:
    """The receiver's variables from `env`, blanks treated as unset, defaults filled in."""
    return {name: (env.get(name) or "").strip() or default for name, default in SETTINGS.items()}


def verifier_config(settings: Mapping[str, Any]) -> VerifierConfig:
    """Check the settings and build the verifier's configuration, or raise ConfigError."""
    api_url = _url(_required(settings, "CLERK_API_URL"), "CLERK_API_URL")
    secret_key = _required(settings, "CLERK_MACHINE_SECRET_KEY")
    if not secret_key.startswith("ak_"):
        raise ConfigError(
            "CLERK_MACHINE_SECRET_KEY must be this receiver machine's own key (ak_...), "
            "not an instance key"
        )
    machine_id = _required(settings, "CLERK_MACHINE_ID")
    if not _MACHINE_ID.fullmatch(machine_id):
        raise ConfigError("CLERK_MACHINE_ID must be this receiver's machine id (mch_...)")
    jwks_url = settings.get("CLERK_JWKS_URL") or ""
    if jwks_url:
        jwks_url = _url(str(jwks_url), "CLERK_JWKS_URL")

    allowed = _allowed_callers(settings.get("M2M_ALLOWED_CALLERS"))
    audience_required = _boolean(settings, "M2M_JWT_AUDIENCE_REQUIRED")
    if not audience_required and not allowed:
        raise ConfigError(
            "M2M_JWT_AUDIENCE_REQUIRED=false needs M2M_ALLOWED_CALLERS: without an audience "
            "check, the allowlist is what decides who may call"
        )

    jwt_key = settings.get("CLERK_JWT_KEY") or None
    if jwt_key:
        try:
            StaticKey(jwt_key)
        except Exception:  # bad PEM, or a key type cryptography cannot load
            raise ConfigError("CLERK_JWT_KEY must be an RSA public key in PEM format") from None

    return VerifierConfig(
        api_url=api_url,
        machine_secret_key=secret_key,
        machine_id=machine_id,
        jwt_issuer=settings.get("CLERK_JWT_ISSUER") or api_url,
        jwks_url=jwks_url,
        jwt_key=jwt_key,
        allowed_callers=allowed,
        audience_required=audience_required,
        leeway=_seconds(settings, "M2M_JWT_LEEWAY_SECONDS", 0, MAX_LEEWAY_SECONDS),
        cache_seconds=_seconds(settings, "M2M_VERIFY_CACHE_SECONDS", 0, None),
        jwt_cache_seconds=_seconds(settings, "M2M_JWT_CACHE_SECONDS", 0, None),
        issuer_timeout=_seconds(settings, "M2M_ISSUER_TIMEOUT_SECONDS", *ISSUER_TIMEOUT_RANGE),
        jwks_lifespan=_seconds(settings, "M2M_JWKS_LIFESPAN_SECONDS", 1, None),
        # the fetch-storm protection: at most one JWKS fetch per cooldown, so never below 1 s
        jwks_cooldown=_seconds(settings, "M2M_JWKS_COOLDOWN_SECONDS", 1, None),
    )


def _url(value: str, name: str) -> str:
    """An http(s) URL with a host and no whitespace, without its trailing slash. The value is
    never repeated in the error (a URL may carry credentials)."""
    value = value.strip().rstrip("/")
    problem = f"{name} must be an http(s) URL with a host, e.g. http://127.0.0.1:8780"
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ConfigError(problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ConfigError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(problem)
    return value


def _required(settings: Mapping[str, Any], name: str) -> str:
    value = settings.get(name)
    if not value:
        raise ConfigError(f"{name} is not set (see receiver_app/.env.example)")
    return str(value)


def _value(settings: Mapping[str, Any], name: str) -> Any:
    """The setting as given, or its default when unset (None or a blank string only: 0 and
    False given to `create_app()` are real values)."""
    value = settings.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return SETTINGS[name]
    return value


def _seconds(settings: Mapping[str, Any], name: str, low: float, high: float | None) -> float:
    """A finite number of seconds within [low, high] (no upper bound when high is None)."""
    value = _value(settings, name)
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number of seconds")
    try:
        number = float(value if value is not None else 0)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds") from None
    in_range = low <= number and (high is None or number <= high)
    if not math.isfinite(number) or not in_range:
        bounds = f"between {low:g} and {high:g}" if high is not None else f"{low:g} or more"
        raise ConfigError(f"{name} must be a finite number of seconds, {bounds}")
    return number


def _boolean(settings: Mapping[str, Any], name: str) -> bool:
    value = _value(settings, name)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def _allowed_callers(value: Any) -> frozenset[str] | None:
    """The allowlist: None when unset; a set value must name machines and nothing else (",,,"
    must never turn into "no allowlist")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    ids = [part.strip() if isinstance(part, str) else part for part in parts]
    if not ids or any(not part for part in ids):
        raise ConfigError(
            "M2M_ALLOWED_CALLERS has an empty entry: give comma-separated machine ids "
            "(mch_...), or leave it unset to allow every machine whose token names this receiver"
        )
    if not all(isinstance(i, str) and _MACHINE_ID.fullmatch(i) for i in ids):
        raise ConfigError("M2M_ALLOWED_CALLERS holds ids that are not machine ids (mch_...)")
    return frozenset(ids)
