"""Receiver configuration: environment variables (and `receiver_app/.env`) checked at start-up.

A wrong or missing value stops the app with a message naming the variable; secret values are
never repeated in that message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .jwks import StaticKey
from .verifier import MAX_LEEWAY_SECONDS, VerifierConfig

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
    api_url = _required(settings, "CLERK_API_URL").rstrip("/")
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError("CLERK_API_URL must be an http(s) URL, e.g. http://127.0.0.1:8780")
    secret_key = _required(settings, "CLERK_MACHINE_SECRET_KEY")
    if not secret_key.startswith("ak_"):
        raise ConfigError(
            "CLERK_MACHINE_SECRET_KEY must be this receiver machine's own key (ak_...), "
            "not an instance key"
        )
    machine_id = _required(settings, "CLERK_MACHINE_ID")
    if not _MACHINE_ID.fullmatch(machine_id):
        raise ConfigError("CLERK_MACHINE_ID must be this receiver's machine id (mch_...)")

    allowed = _allowed_callers(settings.get("M2M_ALLOWED_CALLERS"))
    audience_required = _boolean(settings, "M2M_JWT_AUDIENCE_REQUIRED")
    if not audience_required and not allowed:
        raise ConfigError(
            "M2M_JWT_AUDIENCE_REQUIRED=false needs M2M_ALLOWED_CALLERS: without an audience "
            "check, the allowlist is what decides who may call"
        )
    leeway = _number(settings, "M2M_JWT_LEEWAY_SECONDS")
    if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise ConfigError(f"M2M_JWT_LEEWAY_SECONDS must be between 0 and {MAX_LEEWAY_SECONDS}")
    timeout = _number(settings, "M2M_ISSUER_TIMEOUT_SECONDS")
    if timeout <= 0:
        raise ConfigError("M2M_ISSUER_TIMEOUT_SECONDS must be greater than 0")
    lifespan = _number(settings, "M2M_JWKS_LIFESPAN_SECONDS")
    if lifespan <= 0:
        raise ConfigError("M2M_JWKS_LIFESPAN_SECONDS must be greater than 0")

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
        jwks_url=settings.get("CLERK_JWKS_URL") or "",
        jwt_key=jwt_key,
        allowed_callers=allowed,
        audience_required=audience_required,
        leeway=leeway,
        cache_seconds=_number(settings, "M2M_VERIFY_CACHE_SECONDS"),
        jwt_cache_seconds=_number(settings, "M2M_JWT_CACHE_SECONDS"),
        issuer_timeout=timeout,
        jwks_lifespan=lifespan,
        jwks_cooldown=_number(settings, "M2M_JWKS_COOLDOWN_SECONDS"),
    )


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


def _number(settings: Mapping[str, Any], name: str) -> float:
    value = _value(settings, name)
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number of seconds")
    try:
        number = float(value if value is not None else 0)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds") from None
    if number < 0 or not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number of seconds, 0 or more")
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


def _allowed_callers(value: str | None) -> frozenset[str] | None:
    if not value:
        return None
    ids = frozenset(part.strip() for part in value.split(",") if part.strip())
    bad = sorted(i for i in ids if not _MACHINE_ID.fullmatch(i))
    if bad:
        raise ConfigError(f"M2M_ALLOWED_CALLERS holds ids that are not machine ids: {bad}")
    return ids or None
