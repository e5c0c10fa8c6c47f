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

from .auth import EXTENSION_KEY, require_m2m
from .config import ConfigError, settings_from, verifier_config
from .verifier import M2MVerifier, VerifiedToken

MAX_BODY_BYTES = 64 * 1024  # larger request bodies get 413 (override with MAX_CONTENT_LENGTH)

__all__ = ["ConfigError", "M2MVerifier", "VerifiedToken", "create_app", "require_m2m"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment (and `receiver_app/.env`), then `config`
    on top; stops with ConfigError when they do not make a safe receiver."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config.from_mapping(settings_from(_environment()))
    if config:
        app.config.update(config)
    app.extensions[EXTENSION_KEY] = M2MVerifier(verifier_config(app.config))
    if app.logger.level == logging.NOTSET:
        app.logger.setLevel(logging.INFO)  # token rejections and issuer trouble are INFO/WARNING

    from . import metrics, routes

    app.register_blueprint(routes.bp)
    metrics.install(app)  # GET /metrics: what the receiver saw (receiver_app/metrics.py)
    return app


def _environment() -> dict[str, str]:
    """The process environment over `receiver_app/.env` (skipped when M2M_SKIP_DOTENV=1)."""
    if os.environ.get("M2M_SKIP_DOTENV") == "1":
        return dict(os.environ)
    dotenv = dotenv_values(Path(__file__).with_name(".env"))
    return {**{k: v for k, v in dotenv.items() if v is not None}, **os.environ}
