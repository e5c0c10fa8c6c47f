"""A user's own service: one endpoint protected by a copy of receiver_app's verifier
(verifier.py, jwks.py and verify_cache.py copied into `orders_service/m2m/`)."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, jsonify, request

from .m2m.verifier import M2MVerifier, VerificationError


def create_app(settings: Mapping[str, str]) -> Flask:
    app = Flask(__name__)
    verifier = M2MVerifier(
        settings["CLERK_API_URL"],
        settings["CLERK_MACHINE_SECRET_KEY"],
        settings["CLERK_MACHINE_ID"],
        jwks_url=settings["CLERK_JWKS_URL"],
        issuer_timeout_seconds=1,
    )

    @app.get("/orders")
    def orders():
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            caller = verifier.verify(token)
        except VerificationError as exc:
            return jsonify(error=exc.error, error_description=exc.description), exc.status
        return jsonify(orders=[], caller=caller.machine_id)

    return app
