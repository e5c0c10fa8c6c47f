"""Hostile answers of a token endpoint to the caller's OAuth minter (tests/FAULTS.md): each is
a clear 503 `issuer_unavailable` from `/send`, as the issuer's other unusable answers are, with
neither the client secret nor the answer's token in the answer or the logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from flask import Flask, Response

from caller_app import create_app
from tests.threaded_server import serve_in_thread, stop

CLIENT_SECRET = "s3cret-of-the-caller-under-attack"
HOSTILE_TOKEN = "hostile-token-value-0123456789"


class HostileTokenEndpoint:
    """Metadata, then a token endpoint answering 200 with whatever raw body is set."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.content_type = "application/json"
        self._server = serve_in_thread(self._app())
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"

    def _app(self) -> Flask:
        app = Flask("hostile_token_endpoint")

        @app.get("/.well-known/openid-configuration")
        def metadata() -> Response:
            doc = {"issuer": self.issuer, "token_endpoint": self.issuer + "/token"}
            return Response(json.dumps(doc), content_type="application/json")

        @app.post("/token")
        def token() -> Response:
            return Response(self.body, content_type=self.content_type)

        return app

    def stop(self) -> None:
        stop(self._server)


@pytest.fixture
def endpoint() -> Iterator[HostileTokenEndpoint]:
    running = HostileTokenEndpoint()
    yield running
    running.stop()


def token_answer(**fields: object) -> bytes:
    return json.dumps({"access_token": HOSTILE_TOKEN, "token_type": "Bearer", **fields}).encode()


HOSTILE_ANSWERS = {
    "negative expires_in": token_answer(expires_in=-3600),
    "zero expires_in": token_answer(expires_in=0),
    "boolean expires_in": token_answer(expires_in=True),
    "token_type mac": token_answer(expires_in=60, token_type="mac"),
    "token_type missing": json.dumps({"access_token": HOSTILE_TOKEN, "expires_in": 60}).encode(),
    "not JSON": b"<html>" + b"x" * 1000 + b"</html>",
    "JSON list": b"[1, 2, 3]",
    "huge token": json.dumps(
        {"access_token": "a" * 2_000_000, "token_type": "Bearer", "expires_in": 60}
    ).encode(),
}


@pytest.mark.parametrize("answer", HOSTILE_ANSWERS.values(), ids=HOSTILE_ANSWERS.keys())
def test_a_hostile_token_answer_is_a_clear_503_without_secrets(endpoint, answer, caplog):
    endpoint.body = answer
    env = {
        "M2M_SKIP_DOTENV": "1",
        "M2M_PROVIDER": "oauth",
        "RECEIVER_URL": "http://127.0.0.1:1",
        "OAUTH_ISSUER_URL": endpoint.issuer,
        "OAUTH_CLIENT_ID": "svc-caller",
        "OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "M2M_ISSUER_MAX_ATTEMPTS": "1",
    }
    with caplog.at_level(logging.DEBUG):
        resp = create_app(env).test_client().get("/send")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 503, text
    assert (resp.json["dependency"], resp.json["error"]) == ("issuer", "issuer_unavailable")
    assert "the token endpoint answered" in resp.json["message"]
    for secret in (CLIENT_SECRET, HOSTILE_TOKEN, "a" * 100):
        assert secret not in text
        assert secret not in caplog.text
