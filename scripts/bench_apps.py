"""The receiver as the benchmark serves it: the real app plus an unprotected copy of its handler,
so "what does verification cost" is measured against the same server, body and JSON answer."""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from receiver_app import create_app

UNPROTECTED_PATH = "/bench/unprotected"


def receiver_with_baseline() -> Flask:
    """`create_app()` plus `POST /bench/unprotected`: /receive's work without the token check."""
    app = create_app()

    @app.post(UNPROTECTED_PATH)
    def unprotected_receive() -> ResponseReturnValue:
        body = request.get_json(silent=True)
        message = body.get("message") if isinstance(body, dict) else None
        return jsonify(messageReceived=message, **{"from": None}, token=None)

    return app
