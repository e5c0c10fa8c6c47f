"""A local issuer speaking Clerk's M2M Backend API on the wire, backed by SQLite.

`create_app(config=None)` is the application factory: `flask --app mock_issuer run` or
`gunicorn 'mock_issuer:create_app()'` (several workers share all state through the database).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
from flask import Flask, jsonify

from . import config as config_module
from . import db, log_redaction, machines, seed, signing_keys
from .errors import register_error_handlers

log = logging.getLogger("mock_issuer")


def _setup_logging() -> None:
    """INFO lines from `mock_issuer` to stderr (no keys or tokens are ever logged)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the issuer: settings from the environment (and `mock_issuer/.env`) overridden by
    `config`, database prepared, seed applied, signing key present."""
    _setup_logging()
    log_redaction.install()  # no token or key in the server's request-line logs
    config_module.load_env()
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(config_module.from_env(app.instance_path))
    if config:
        app.config.from_mapping(config)
    if not app.config["CLERK_SECRET_KEY"].startswith("sk_"):
        raise RuntimeError(
            "CLERK_SECRET_KEY must be set to the instance secret key (sk_...) the issuer accepts;"
            " see mock_issuer/.env.example"
        )
    app.config["MOCK_ISSUER_RETENTION_DAYS"] = config_module.retention_days(
        app.config["MOCK_ISSUER_RETENTION_DAYS"]
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]

    register_error_handlers(app)
    _register_blueprints(app)
    _register_cli(app)
    _prepare_storage(app)
    from . import faults  # fault injection and rate-limit emulation (ours, off by default)

    faults.init_app(app)

    @app.get("/healthz")
    def healthz() -> Any:
        db.connect(app.config["MOCK_ISSUER_DB"]).execute("SELECT 1").fetchone()
        return jsonify({"status": "ok"})

    log.info(
        "mock_issuer ready (pid %d): Clerk M2M API for %s, database %s",
        os.getpid(),
        app.config["MOCK_ISSUER_URL"],
        app.config["MOCK_ISSUER_DB"],
    )
    return app


def _register_blueprints(app: Flask) -> None:
    from . import api_jwks, api_machines, api_test_signing, api_tokens, api_usage

    app.register_blueprint(api_machines.bp)
    app.register_blueprint(api_tokens.bp, url_prefix="/v1", name="m2m_tokens_v1")
    app.register_blueprint(api_tokens.bp, url_prefix="", name="m2m_tokens")
    app.register_blueprint(api_jwks.bp)
    app.register_blueprint(api_usage.bp)
    app.register_blueprint(api_test_signing.bp)  # POST /v1/_sign, for rejection tests
    from . import dashboard, metrics

    dashboard.init_app(app)  # /dashboard: usage charts and machine management
    metrics.init_app(app)  # /metrics: Prometheus counters and request latency


def _prepare_storage(app: Flask) -> None:
    """Schema, instance id, first signing key and seed: each race-safe, since every gunicorn
    worker runs this at the same moment."""
    path = app.config["MOCK_ISSUER_DB"]
    db.init_db(path)
    conn = db.connect(path)
    machines.instance_id(conn)
    signing_keys.ensure_signing_key(conn)
    if app.config["MOCK_ISSUER_SEED"]:
        entries = seed.load_seed(app.config["MOCK_ISSUER_SEED"])
        created = seed.apply_seed(conn, entries)
        if created:
            log.info("seeded %d machine(s): %s", len(created), ", ".join(created))


def _register_cli(app: Flask) -> None:
    @app.cli.command("rotate-signing-key")
    def rotate_signing_key_command() -> None:
        """Make a new JWT signing key active; the old one stays published until every token
        it signed has expired."""
        conn = db.connect(app.config["MOCK_ISSUER_DB"])
        new_kid, old_kid = signing_keys.rotate_signing_key(conn)
        click.echo(f"active signing key: {new_kid} (retired: {old_kid or 'none'})")
