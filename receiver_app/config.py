"""The receiver's settings: the environment variables a user changes, checked once at start-up.

Each `Settings` field is named after its variable, lower-cased. Tunables a user rarely changes
(leeway, timeouts, JWKS lifespan and cooldown) are `M2MVerifier` constructor defaults instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from .jwks import StaticKey
from .verifier import JWT_CACHE_SECONDS

_MACHINE_ID = re.compile(r"mch_[A-Za-z0-9_]+")
_CLIENT_ID = re.compile(r"\S+")  # M2M_PROVIDER=oauth: a caller is a client id, any non-blank
PROVIDERS = ("clerk", "oauth")  # Clerk's M2M tokens, or standard OAuth 2.0 access tokens


class ConfigError(ValueError):
    """A missing or invalid setting: the message names the variable, never its value."""


@dataclass(frozen=True)
class Settings:
    clerk_api_url: str = ""  # these three are required with M2M_PROVIDER=clerk
    clerk_machine_secret_key: str = ""
    clerk_machine_id: str = ""
    clerk_jwks_url: str | None = None  # None: the verifier's {api_url}/.well-known/jwks.json
    clerk_jwt_key: str | None = None
    clerk_jwt_issuer: str | None = None  # None: the verifier expects CLERK_API_URL
    m2m_allowed_callers: frozenset[str] | None = None
    m2m_jwt_audience_required: bool = True
    m2m_verify_cache_seconds: float = 0
    m2m_jwt_cache_seconds: float = JWT_CACHE_SECONDS
    m2m_provider: str = "clerk"
    # M2M_PROVIDER=oauth: the issuer (discovery), this resource's identifier, its own client
    # credentials for introspection (opaque tokens), and the optional checks
    oauth_issuer_url: str | None = None
    oauth_audience: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    oauth_required_scope: frozenset[str] = frozenset()
    oauth_require_at_jwt: bool = True

    def __repr__(self) -> str:  # keep the key and the client secret out of logs and tracebacks
        return (
            f"Settings(m2m_provider={self.m2m_provider!r}, clerk_api_url={self.clerk_api_url!r}, "
            f"clerk_machine_id={self.clerk_machine_id!r}, "
            f"oauth_issuer_url={self.oauth_issuer_url!r}, oauth_audience={self.oauth_audience!r})"
        )


ENV_VARS = tuple(f.name.upper() for f in fields(Settings))  # every variable the receiver reads


def load_settings(env: Mapping[str, str]) -> Settings:
    """Settings from `env` (blank means unset); raises ConfigError naming the bad variable."""
    values = {name: text for name in ENV_VARS if (text := env.get(name, "").strip())}
    provider = values.get("M2M_PROVIDER", "clerk")
    if provider not in PROVIDERS:
        raise ConfigError("M2M_PROVIDER must be clerk or oauth")
    clerk = _clerk_identity(values) if provider == "clerk" else {}
    oauth = _oauth_settings(values, required=provider == "oauth")
    allowed = _allowed_callers(
        values.get("M2M_ALLOWED_CALLERS"), _MACHINE_ID if provider == "clerk" else _CLIENT_ID
    )
    audience_required = _boolean(
        values.get("M2M_JWT_AUDIENCE_REQUIRED", "true"), "M2M_JWT_AUDIENCE_REQUIRED"
    )
    if not audience_required and not allowed:
        raise ConfigError(
            "M2M_JWT_AUDIENCE_REQUIRED=false needs M2M_ALLOWED_CALLERS: without an audience "
            "check, the allowlist is what decides who may call"
        )
    jwks_url = values.get("CLERK_JWKS_URL")
    return Settings(
        **clerk,
        m2m_provider=provider,
        **oauth,
        clerk_jwks_url=_url(jwks_url, "CLERK_JWKS_URL") if jwks_url else None,
        clerk_jwt_key=_pem_key(values.get("CLERK_JWT_KEY")),
        clerk_jwt_issuer=values.get("CLERK_JWT_ISSUER"),
        m2m_allowed_callers=allowed,
        m2m_jwt_audience_required=audience_required,
        m2m_verify_cache_seconds=_seconds(values, "M2M_VERIFY_CACHE_SECONDS", 0),
        m2m_jwt_cache_seconds=_seconds(values, "M2M_JWT_CACHE_SECONDS", JWT_CACHE_SECONDS),
    )


def _clerk_identity(values: Mapping[str, str]) -> dict[str, str]:
    """CLERK_API_URL, CLERK_MACHINE_SECRET_KEY and CLERK_MACHINE_ID, required and checked."""
    api_url = _url(_required(values, "CLERK_API_URL"), "CLERK_API_URL")
    secret_key = _required(values, "CLERK_MACHINE_SECRET_KEY")
    if not secret_key.startswith("ak_"):
        raise ConfigError(
            "CLERK_MACHINE_SECRET_KEY must be this receiver machine's own key (ak_...), "
            "not an instance key"
        )
    machine_id = _required(values, "CLERK_MACHINE_ID")
    if not _MACHINE_ID.fullmatch(machine_id):
        raise ConfigError("CLERK_MACHINE_ID must be this receiver's machine id (mch_...)")
    return {
        "clerk_api_url": api_url,
        "clerk_machine_secret_key": secret_key,
        "clerk_machine_id": machine_id,
    }


def _oauth_settings(values: Mapping[str, str], required: bool) -> dict[str, Any]:
    """The OAUTH_* fields; with `required` (M2M_PROVIDER=oauth) the issuer and audience must be
    set, and the client id and secret come together or not at all."""
    issuer = values.get("OAUTH_ISSUER_URL")
    client = (values.get("OAUTH_CLIENT_ID"), values.get("OAUTH_CLIENT_SECRET"))
    require_at_jwt = _boolean(values.get("OAUTH_REQUIRE_AT_JWT", "true"), "OAUTH_REQUIRE_AT_JWT")
    if required:
        _required(values, "OAUTH_ISSUER_URL")
        _required(values, "OAUTH_AUDIENCE")
        if (client[0] is None) != (client[1] is None):
            raise ConfigError(
                "OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET go together (introspection needs both)"
            )
    return {
        "oauth_issuer_url": _url(issuer, "OAUTH_ISSUER_URL") if issuer else None,
        "oauth_audience": values.get("OAUTH_AUDIENCE"),
        "oauth_client_id": client[0],
        "oauth_client_secret": client[1],
        "oauth_required_scope": frozenset(values.get("OAUTH_REQUIRED_SCOPE", "").split()),
        "oauth_require_at_jwt": require_at_jwt,
    }


def _required(values: Mapping[str, str], name: str) -> str:
    if name not in values:
        raise ConfigError(f"{name} is not set (see receiver_app/.env.example)")
    return values[name]


def _url(value: str, name: str) -> str:
    """An http(s) URL with a host and no whitespace, without its trailing slash. The value is
    never repeated in the error (a URL may carry credentials)."""
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
    return value.rstrip("/")


def _pem_key(value: str | None) -> str | None:
    """The PEM public key, checked now so a bad one stops the app instead of every JWT."""
    if value is not None:
        try:
            StaticKey(value)
        except Exception:  # bad PEM, or a key type cryptography cannot load
            raise ConfigError("CLERK_JWT_KEY must be an RSA public key in PEM format") from None
    return value


def _seconds(values: Mapping[str, str], name: str, default: float) -> float:
    """A finite, non-negative number of seconds; unset means `default`."""
    try:
        number = float(values.get(name, default))
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds") from None
    if not (math.isfinite(number) and number >= 0):
        raise ConfigError(f"{name} must be a finite number of seconds, 0 or more")
    return number


def _boolean(value: str, name: str) -> bool:
    text = value.lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def _allowed_callers(value: str | None, caller_id: re.Pattern[str]) -> frozenset[str] | None:
    """The allowlist: None when unset; a set value must name callers (machine ids, or client ids
    with M2M_PROVIDER=oauth) and nothing else (",,," must never turn into "no allowlist")."""
    if value is None:
        return None
    ids = [part.strip() for part in value.split(",")]
    if not all(ids):
        raise ConfigError(
            "M2M_ALLOWED_CALLERS has an empty entry: give comma-separated machine ids "
            "(mch_...), or leave it unset to allow every machine whose token names this receiver"
        )
    if not all(caller_id.fullmatch(i) for i in ids):
        raise ConfigError("M2M_ALLOWED_CALLERS holds ids that are not machine ids (mch_...)")
    return frozenset(ids)
