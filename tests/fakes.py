"""Fakes the unit tests control: a clock that moves only when told, and a fake issuer and
receiver for the caller's token client."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from mock_issuer import db


@dataclass
class FakeClock:
    """Seconds that move only when the test moves them (`advance`, or `now` set by hand), so
    expiry, caches and cooldowns are tested without sleeping. Call it for the time."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def now_ms(self) -> int:
        return round(self.now * 1000)


def advance_clock(monkeypatch, seconds: float) -> None:
    """Move the in-process issuer's clock (`mock_issuer.db.now_ms`) forward: the first call
    stops it on a FakeClock at the current time, every call advances that clock."""
    clock = getattr(db.now_ms, "__self__", None)
    if not isinstance(clock, FakeClock):
        clock = FakeClock(db.now_ms() / 1000)
        monkeypatch.setattr(db, "now_ms", clock.now_ms)
    clock.advance(seconds)


MACHINE_KEY = "ak_unittestcaller" + "9" * 24


class FakeServer:
    """A fake issuer (`POST /m2m_tokens`) and receiver (`POST /receive`) in one thread-served
    Flask app. Script answers by appending (status, headers) to `issuer_script`, or
    (status, headers[, json_body]) to `receiver_script`; without a script it mints tokens and
    accepts tokens it minted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.create_bodies: list[dict] = []
        self.create_auth: list[str] = []
        self.issuer_script: deque[tuple[int, dict]] = deque()
        self.issuer_delay = 0.0
        self.token_overrides: dict | None = None  # fields of the next 201 replaced by these
        self.jwt_gate: threading.Event | None = None  # when set, jwt creations wait on it
        self.expiration_cap: float | None = None  # issuer shortens lifetimes to this
        self.minted: dict[str, str] = {}  # secret -> id
        self.rejected: set[str] = set()  # secrets the receiver answers 401 to
        self.receiver_script: deque[tuple] = deque()
        self.received: list[tuple[str, dict | None]] = []
        self.receiver_delay = 0.0  # seconds the receiver waits before answering
        self.app = self._build_app()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def creations(self) -> int:
        return len(self.create_bodies)

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _build_app(self) -> Flask:
        app = Flask("fake_issuer")

        @app.post("/m2m_tokens")
        def create():
            body = request.get_json()
            with self.lock:
                self.create_bodies.append(body)
                self.create_auth.append(request.headers.get("Authorization", ""))
                scripted = self.issuer_script.popleft() if self.issuer_script else None
            if self.issuer_delay:
                time.sleep(self.issuer_delay)
            if body.get("token_format") == "jwt" and self.jwt_gate is not None:
                self.jwt_gate.wait(10)
            if scripted is not None:
                status, headers = scripted
                envelope = {
                    "errors": [
                        {
                            "message": "scripted",
                            "long_message": f"scripted failure {status}",
                            "code": f"code_{status}",
                        }
                    ]
                }
                return jsonify(envelope), status, headers
            minted = self._mint(body)
            with self.lock:
                overrides, self.token_overrides = self.token_overrides, None
            return {**minted, **(overrides or {})}, 201

        @app.post("/receive")
        def receive():
            auth = request.headers.get("Authorization", "")
            secret = auth.removeprefix("Bearer ")
            with self.lock:
                self.received.append((secret, request.get_json(silent=True)))
                scripted = self.receiver_script.popleft() if self.receiver_script else None
            if self.receiver_delay:
                time.sleep(self.receiver_delay)
            if scripted is not None:
                status, headers = scripted[:2]
                body = scripted[2] if len(scripted) > 2 else {"error": "scripted"}
                return jsonify(body), status, headers
            if secret not in self.minted or secret in self.rejected:
                challenge = 'Bearer realm="fake", error="invalid_token", '
                challenge += 'error_description="The token was revoked"'
                return jsonify(error="invalid_token"), 401, {"WWW-Authenticate": challenge}
            return jsonify(
                messageReceived=(request.get_json(silent=True) or {}).get("message"),
                token_id=self.minted[secret],
            )

        return app

    def _mint(self, body: dict) -> dict:
        now_ms = int(time.time() * 1000)
        ttl = body.get("seconds_until_expiration") or 3600
        if self.expiration_cap is not None:
            ttl = min(ttl, self.expiration_cap)
        token_id = "mt_" + secrets.token_hex(16)
        secret = ("mt_" if body.get("token_format", "opaque") == "opaque" else "ey.") + (
            secrets.token_hex(24)
        )
        with self.lock:
            self.minted[secret] = token_id
        return {
            "object": "machine_to_machine_token",
            "id": token_id,
            "subject": "mch_fake",
            "claims": None,
            "scopes": [],
            "revoked": False,
            "revocation_reason": None,
            "expired": False,
            "expiration": now_ms + int(ttl * 1000),
            "last_used_at": None,
            "created_at": now_ms,
            "updated_at": now_ms,
            "token": secret,
        }
