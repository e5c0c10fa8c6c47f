"""A local issuer speaking Clerk's M2M Backend API on the wire, backed by SQLite.

`create_app(config=None)` is the application factory: `flask --app mock_issuer run` or
`gunicorn 'mock_issuer:create_app()'` (several workers share all state through the database).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from dotenv import dotenv_values
from flask import Flask, jsonify

from . import dashboard, db, log_redaction, machines, oauth_clients, seed, signing_keys
from .config import APP_DIR, ENV_VARS, Settings, load_settings
from .errors import register_error_handlers

log = logging.getLogger("mock_issuer")

MAX_BODY_BYTES = 64 * 1024


def create_app(config: Mapping[str, object] | None = None) -> Flask:
    """Build the issuer. Settings come from `mock_issuer/.env` (skipped when M2M_SKIP_DOTENV=1),
    overridden by the environment, overridden by `config` (keys named as the environment
    variables; other keys, such as TESTING, go to Flask's config). Bad settings fail here,
    before the database is touched; then storage, seed and signing key are made ready."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log_redaction.install()  # no token or key in the server's request-line logs
    config = dict(config or {})
    settings = load_settings(_environment(config))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config.update({k: v for k, v in config.items() if k not in ENV_VARS})
    app.extensions["settings"] = settings
    app.json.sort_keys = False  # type: ignore[attr-defined]

    register_error_handlers(
        app, html_prefix=dashboard.bp.url_prefix or "", html_page=dashboard.error_page
    )
    _register_blueprints(app)
    _register_cli(app, settings)
    _prepare_storage(settings)
    from . import pruning  # retention in a background thread, off the request path

    pruning.init_app(app)
    from . import faults  # fault injection and rate-limit emulation (ours, off by default)

    faults.init_app(app)
    from . import oauth  # OAuth 2.0 client credentials, introspection, revocation (ours)

    oauth.init_app(app)

    @app.get("/healthz")
    def healthz() -> Any:
        db.get_conn().execute("SELECT 1").fetchone()
        return jsonify({"status": "ok"})

    log.info(
        "mock_issuer ready (pid %d): Clerk M2M API for %s, database %s",
        os.getpid(),
        settings.mock_issuer_url,
        settings.mock_issuer_db,
    )
    return app


def _environment(config: Mapping[str, object]) -> dict[str, str]:
    """The variables settings are read from: `.env`, overridden by the real environment,
    overridden by `config` (a None value is ignored). Nothing is written back to os.environ."""
    env: dict[str, str] = {}
    if os.environ.get("M2M_SKIP_DOTENV") != "1":
        env.update({k: v for k, v in dotenv_values(APP_DIR / ".env").items() if v is not None})
    env.update(os.environ)
    env.update({k: str(v) for k, v in config.items() if k in ENV_VARS and v is not None})
    return env


def _register_blueprints(app: Flask) -> None:
    from . import (
        api_jwks,
        api_machines,
        api_oauth_clients,
        api_test_signing,
        api_tokens,
        api_usage,
    )

    app.register_blueprint(api_machines.bp)
    app.register_blueprint(api_tokens.bp, url_prefix="/v1", name="m2m_tokens_v1")
    app.register_blueprint(api_tokens.bp, url_prefix="", name="m2m_tokens")
    app.register_blueprint(api_jwks.bp)
    app.register_blueprint(api_usage.bp)
    app.register_blueprint(api_test_signing.bp)  # POST /v1/_sign, for rejection tests
    app.register_blueprint(api_oauth_clients.bp)  # /v1/_oauth_clients/<id>: default format
    from . import metrics

    dashboard.init_app(app)  # /dashboard: usage charts and machine management
    metrics.init_app(app)  # /metrics: Prometheus counters and request latency


def _prepare_storage(settings: Settings) -> None:
    """Schema, instance id, first signing key and seed: each race-safe, since every gunicorn
    worker runs this at the same moment."""
    Path(settings.mock_issuer_db).parent.mkdir(parents=True, exist_ok=True)
    db.init_db(settings.mock_issuer_db)
    conn = db.connect(settings.mock_issuer_db)
    machines.instance_id(conn)
    oauth_clients.init_storage(conn)  # before the seed, which may set a machine's format
    signing_keys.ensure_signing_key(conn)
    if settings.mock_issuer_seed:
        entries = seed.load_seed(settings.mock_issuer_seed)
        created = seed.apply_seed(conn, entries)
        if created:
            log.info("seeded %d machine(s): %s", len(created), ", ".join(created))


def _register_cli(app: Flask, settings: Settings) -> None:
    @app.cli.command("rotate-signing-key")
    def rotate_signing_key_command() -> None:
        """Make a new JWT signing key active; the old one stays published until every token
        it signed has expired."""
        conn = db.connect(settings.mock_issuer_db)
        new_kid, old_kid = signing_keys.rotate_signing_key(conn)
        click.echo(f"active signing key: {new_kid} (retired: {old_kid or 'none'})")
