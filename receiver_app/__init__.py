"""The receiver: a Flask service that accepts only requests carrying a valid Clerk M2M token.

Run it with `flask --app receiver_app run --port 8782` or `gunicorn 'receiver_app:create_app()'`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from flask import Flask

from . import log_redaction
from .auth import EXTENSION_KEY, require_m2m
from .config import ConfigError, Settings, load_settings
from .oauth_verifier import OAuthVerifier
from .verifier import M2MVerifier, VerifiedToken

APP_DIR = Path(__file__).resolve().parent
MAX_BODY_BYTES = 64 * 1024  # larger request bodies get 413

__all__ = ["ConfigError", "M2MVerifier", "VerifiedToken", "build_verifier", "create_app"]
__all__ += ["require_m2m"]


def create_app(config: Mapping[str, object] | None = None) -> Flask:
    """Build the app. Settings come from `config` (tests), then the environment, then
    `receiver_app/.env` (skipped when M2M_SKIP_DOTENV=1); bad settings fail here, clearly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = Flask(__name__)
    log_redaction.install()  # no token or key in the server's request-line logs
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    settings = load_settings(_environment(config or {}))
    app.extensions["settings"] = settings
    app.extensions[EXTENSION_KEY] = build_verifier(settings)

    from . import metrics, routes

    app.register_blueprint(routes.bp)
    metrics.install(app)  # GET /metrics: what the receiver saw (receiver_app/metrics.py)
    return app


def build_verifier(settings: Settings, **tunables: Any) -> M2MVerifier | OAuthVerifier:
    """The verifier these settings describe; `tunables` override the verifier's keyword
    defaults (leeway, timeouts, JWKS lifespan and cooldown)."""
    if settings.m2m_provider == "oauth":
        return oauth_verifier(settings, **tunables)
    return M2MVerifier(
        settings.clerk_api_url,
        settings.clerk_machine_secret_key,
        settings.clerk_machine_id,
        jwt_issuer=settings.clerk_jwt_issuer,
        jwks_url=settings.clerk_jwks_url,
        jwt_key=settings.clerk_jwt_key,
        allowed_callers=settings.m2m_allowed_callers,
        audience_required=settings.m2m_jwt_audience_required,
        opaque_cache_seconds=settings.m2m_verify_cache_seconds,
        jwt_cache_seconds=settings.m2m_jwt_cache_seconds,
        **tunables,
    )


def oauth_verifier(settings: Settings, **tunables: Any) -> OAuthVerifier:
    """The OAuth 2.0 access-token verifier of M2M_PROVIDER=oauth."""
    return OAuthVerifier(
        settings.oauth_issuer_url or "",
        settings.oauth_audience or "",
        client_id=settings.oauth_client_id,
        client_secret=settings.oauth_client_secret,
        allowed_callers=settings.m2m_allowed_callers,
        required_scopes=settings.oauth_required_scope,
        require_at_jwt=settings.oauth_require_at_jwt,
        introspection_cache_seconds=settings.m2m_verify_cache_seconds,
        jwt_cache_seconds=settings.m2m_jwt_cache_seconds,
        **tunables,
    )


def _environment(config: Mapping[str, object]) -> dict[str, str]:
    """The variables settings are read from: `.env`, overridden by the real environment,
    overridden by `config`. A `config` value is used as given (0 is 0); None means unset."""
    env: dict[str, str] = {}
    if os.environ.get("M2M_SKIP_DOTENV") != "1":
        env.update({k: v for k, v in dotenv_values(APP_DIR / ".env").items() if v is not None})
    env.update(os.environ)
    env.update({k: str(v) for k, v in config.items() if v is not None})
    return env
