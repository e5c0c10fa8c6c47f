"""The caller: a Flask service that obtains, reuses and presents M2M tokens (Clerk M2M, or
OAuth 2.0 client credentials with M2M_PROVIDER=oauth).

`GET /send` gets a token (cached until shortly before it expires) and POSTs a message to the
receiver's `/receive` with it, like machine A in Clerk's m2m-example.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from flask import Flask

from . import log_redaction
from .config import Settings, load_settings
from .errors import register_error_handlers
from .oauth_minter import OAuthClientCredentialsMinter
from .token_client import M2MTokenClient, RetryPolicy

APP_DIR = Path(__file__).resolve().parent


def create_app(config: Mapping[str, object] | None = None) -> Flask:
    """Build the app. Settings come from `config` (tests), then the environment, then
    `caller_app/.env` (skipped when M2M_SKIP_DOTENV=1); bad settings fail here, clearly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = Flask(__name__)
    log_redaction.install()  # no token or key in the server's request-line logs
    settings = load_settings(_environment(config or {}))
    app.extensions["settings"] = settings
    app.extensions["m2m_token_client"] = _token_client(settings)

    from . import send

    app.register_blueprint(send.bp)
    register_error_handlers(app)
    return app


def _environment(config: Mapping[str, object]) -> dict[str, str]:
    """The variables settings are read from: `.env`, overridden by the real environment,
    overridden by `config`. A `config` value is used as given (0 is 0); None means unset."""
    env: dict[str, str] = {}
    if os.environ.get("M2M_SKIP_DOTENV") != "1":
        env.update({k: v for k, v in dotenv_values(APP_DIR / ".env").items() if v is not None})
    env.update(os.environ)
    env.update({k: str(v) for k, v in config.items() if v is not None})
    return env


def _token_client(settings: Settings) -> M2MTokenClient:
    """The one token client of this process, shared by every request: Clerk M2M or, with
    M2M_PROVIDER=oauth, the client-credentials grant of any OAuth 2.0 server."""
    seconds = settings.m2m_http_timeout_seconds
    timeout = (min(3.05, seconds), seconds)  # connect: 3.05 s, just past a TCP retry
    clerk = settings.m2m_provider == "clerk"
    return M2MTokenClient(
        settings.clerk_api_url if clerk else None,
        settings.clerk_machine_secret_key if clerk else None,
        minter=None if clerk else oauth_minter(settings, timeout),
        token_format=settings.m2m_token_format,
        ttl_seconds=settings.m2m_token_ttl_seconds,
        refresh_margin_seconds=settings.m2m_refresh_margin_seconds,
        timeout=timeout,
        retry=RetryPolicy(
            max_attempts=settings.m2m_issuer_max_attempts,
            max_total_seconds=settings.m2m_issuer_retry_budget_seconds,
        ),
    )


def oauth_minter(settings: Settings, timeout: tuple[float, float]) -> OAuthClientCredentialsMinter:
    """The client-credentials minter the OAUTH_* settings describe."""
    return OAuthClientCredentialsMinter(
        settings.oauth_client_id or "",
        settings.oauth_client_secret or "",
        issuer_url=settings.oauth_issuer_url,
        token_url=settings.oauth_token_url,
        audience=settings.oauth_audience,
        resource=settings.oauth_resource,
        scope=settings.oauth_scope,
        timeout=timeout,
    )
