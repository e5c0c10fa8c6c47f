"""The receiver with short timings, for tests that run it as a process (`start_app(xprocess,
"tests.quick_receiver", ...)`): with the verifier's defaults (issuer timeout 5 s, JWKS lifespan
300 s, cooldown 30 s) an outage or a key rotation would take minutes to show."""

from __future__ import annotations

from flask import Flask

import receiver_app

ISSUER_TIMEOUT = 1.0  # seconds
JWKS_LIFESPAN = 1.0
JWKS_COOLDOWN = 1.0


def create_app() -> Flask:
    app = receiver_app.create_app()
    app.extensions["m2m_verifier"] = receiver_app.build_verifier(
        app.extensions["settings"],
        issuer_timeout_seconds=ISSUER_TIMEOUT,
        jwks_lifespan_seconds=JWKS_LIFESPAN,
        jwks_cooldown_seconds=JWKS_COOLDOWN,
    )
    return app
