"""Bad-input campaign (Hypothesis) against every issuer route and the receiver, in process.

Random and malformed JSON, wrong types, huge and deeply nested bodies, odd unicode, broken
Authorization and Content-Type headers, odd query strings. The issuer must answer below 500,
always in Clerk's envelope with `Content-Type: application/json`, and a rejected request must
leave every table as it was (`usage_events` excepted: failed verifications are recorded on
purpose). The receiver (no allowlist) must answer 200/400/401 only (413 for an oversize body),
with RFC 6750 challenges, and 200 to every usable message sent with a valid token.
The requests and the answer checks are in tests/bad_input.py; the real-process pass is in
test_faults_bad_input_processes.py.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import example, given
from hypothesis import strategies as st
from werkzeug.serving import make_server

import receiver_app
from mock_issuer import db
from receiver_app.config import ENV_VARS
from tests.bad_input import (
    TARGET,
    FuzzRequest,
    assert_clerk_answer,
    assert_rfc6750_answer,
    is_usable_message,
    issuer_requests,
    receiver_requests,
    sends_valid_token,
    snapshot,
    usable_receiver_requests,
)
from tests.faults_strategies import fuzz_settings, json_bytes
from tests.seed import CALLER, OUTSIDER, RECEIVER, SK, TEST_SECRET_KEY, make_issuer_app


@pytest.fixture(scope="module")
def issuer_app(tmp_path_factory) -> Iterator[Flask]:
    app = make_issuer(tmp_path_factory.mktemp("fuzz-issuer"), "http://127.0.0.1:8798")
    yield app
    db.close_thread_connections()


def make_issuer(workdir: Path, url: str) -> Flask:
    return make_issuer_app(workdir, MOCK_ISSUER_URL=url)


class IssuerUnderTest:
    """The issuer's test client, a throwaway machine for destructive routes, and a
    read-only view of its database."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()
        self.db = sqlite3.connect(
            f"file:{app.extensions['settings'].mock_issuer_db}?mode=ro", uri=True
        )
        self.target = ""

    def ensure_target(self) -> str:
        if (
            not self.target
            or self.client.get(f"/v1/machines/{self.target}", headers=SK).status_code != 200
        ):
            resp = self.client.post(
                "/v1/machines",
                json={"name": "fuzz-target", "scoped_machines": [RECEIVER.id]},
                headers=SK,
            )
            assert resp.status_code == 200, resp.json
            self.target = resp.json["id"]
        return self.target

    def send(self, req: FuzzRequest):
        path = req.path.replace(quote(TARGET, safe="{}"), self.target).replace(TARGET, self.target)
        body = req.body
        if body is not None:
            body = body.replace(json_bytes(TARGET)[1:-1], self.target.encode())
        return self.client.open(
            path, method=req.method, data=body, headers=req.headers(), query_string=req.query
        )


@pytest.fixture(scope="module")
def issuer_under_test(issuer_app) -> IssuerUnderTest:
    return IssuerUnderTest(issuer_app)


@fuzz_settings(200)
@given(req=issuer_requests())
@example(
    req=FuzzRequest(
        "POST", "/v1/m2m_tokens", b"[" * 5000, "application/json", f"Bearer {CALLER.secret_key}"
    )
)
@example(
    req=FuzzRequest(
        "POST",
        "/v1/machines",
        b'{"name": "\\ud800"}',
        "application/json",
        f"Bearer {TEST_SECRET_KEY}",
    )
)
@example(
    req=FuzzRequest(
        "POST",
        "/m2m_tokens/verify",
        b'{"token": "mt_\\udfff"}',
        None,
        f"Bearer {RECEIVER.secret_key}",
    )
)
@example(
    req=FuzzRequest(
        "POST", "/m2m_tokens", b'{"claims": {"n": 1e400}}', None, f"Bearer {CALLER.secret_key}"
    )
)
def test_issuer_never_answers_5xx_always_uses_the_envelope_and_rejects_without_writing(
    issuer_under_test, req
):
    issuer = issuer_under_test
    issuer.ensure_target()
    before = snapshot(issuer.db)
    resp = issuer.send(req)
    try:
        assert_clerk_answer(req.method, resp.status_code, resp.headers, resp.get_data())
        if resp.status_code >= 400:
            assert snapshot(issuer.db) == before, f"{req.method} {req.path} changed the database"
    finally:
        if "_faults" in req.path:
            issuer.client.delete("/v1/_faults", headers=SK)  # a fuzzed rule must not fault others


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000,
        b'{"claims":' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"claims": 1e400}',
        b'{"claims": "\\ud800"}',
        b'{"claims": {"\\udfff": 1}}',
    ],
    ids=["nested-array", "nested-claims", "overflowing-float", "lone-surrogate", "surrogate-key"],
)
def test_body_the_issuer_cannot_represent_is_a_400_naming_the_problem(issuer_under_test, body):
    """Found while building this campaign: these were 500s (RecursionError, UnicodeEncodeError
    in SQLite and in the token hash) or a stored `Infinity`, which is not JSON."""
    resp = issuer_under_test.client.post(
        "/v1/m2m_tokens", data=body, headers={"Authorization": f"Bearer {CALLER.secret_key}"}
    )
    assert resp.status_code == 400
    assert resp.json["errors"][0]["code"] == "request_body_invalid"


def test_lone_surrogates_in_names_and_tokens_are_400_not_500(issuer_under_test):
    client = issuer_under_test.client
    resp = client.post("/v1/machines", data=b'{"name": "\\ud800"}', headers=SK)
    assert resp.status_code == 400, resp.json
    resp = client.post("/m2m_tokens/verify", data=b'{"token": "\\ud800"}', headers=SK)
    assert resp.status_code == 400, resp.json


# ---- the receiver ----


@dataclass
class ReceiverWorld:
    client: Any
    valid: list[str]  # tokens the receiver must accept
    invalid: list[str]  # real tokens it must refuse: revoked, out of scope


@pytest.fixture(scope="module")
def receiver_world(tmp_path_factory) -> Iterator[ReceiverWorld]:
    """A receiver (test client) verifying against a real issuer served from a thread."""
    workdir = tmp_path_factory.mktemp("fuzz-receiver")
    placeholder = make_server("127.0.0.1", 0, Flask("placeholder"))
    port = placeholder.server_port
    placeholder.server_close()
    issuer = make_issuer(workdir, f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, issuer, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    issuer_client = issuer.test_client()

    def mint(key: str, **body: Any) -> str:
        resp = issuer_client.post(
            "/v1/m2m_tokens", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 201, resp.json
        return resp.json["token"]

    valid = [mint(CALLER.secret_key), mint(CALLER.secret_key, token_format="jwt")]
    revoked = mint(CALLER.secret_key)
    token_id = issuer_client.post("/m2m_tokens/verify", json={"token": revoked}, headers=SK).json[
        "id"
    ]
    issuer_client.post(f"/m2m_tokens/{token_id}/revoke", json={}, headers=SK)
    invalid = [revoked, mint(OUTSIDER.secret_key), mint(OUTSIDER.secret_key, token_format="jwt")]
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_VARS:
            mp.delenv(name, raising=False)
        mp.setenv("M2M_SKIP_DOTENV", "1")
        app = receiver_app.create_app(
            {
                "CLERK_API_URL": url,
                "CLERK_MACHINE_SECRET_KEY": RECEIVER.secret_key,
                "CLERK_MACHINE_ID": RECEIVER.id,
            }
        )
    app.testing = True
    yield ReceiverWorld(app.test_client(), valid, invalid)
    server.shutdown()
    server.server_close()
    db.close_thread_connections()


@fuzz_settings(150)
@given(data=st.data())
def test_receiver_answers_200_to_usable_messages_else_400_401_with_rfc6750_challenges(
    receiver_world, data
):
    world = receiver_world
    tokens = world.valid + world.invalid
    req = data.draw(receiver_requests(tokens))
    resp = world.client.open(
        req.path, method=req.method, data=req.body, headers=req.headers(), query_string=req.query
    )
    assert_rfc6750_answer(resp, req, world.valid, tokens)


@fuzz_settings(60)
@given(data=st.data())
def test_receiver_accepts_every_usable_message_sent_with_a_valid_token(receiver_world, data):
    world = receiver_world
    req = data.draw(usable_receiver_requests(world.valid))
    assert is_usable_message(req) and sends_valid_token(req, world.valid)
    resp = world.client.open(
        req.path, method=req.method, data=req.body, headers=req.headers(), query_string=req.query
    )
    assert_rfc6750_answer(resp, req, world.valid, world.valid + world.invalid)
    assert resp.json["from"] == CALLER.id


@pytest.mark.parametrize("body", [b"[" * 5000, b'{"message":' * 2000 + b"1" + b"}" * 2000])
def test_receiver_treats_a_too_deeply_nested_body_like_malformed_json(receiver_world, body):
    """Found while building this campaign: behind a valid token this was a 500 (RecursionError
    in the JSON parser). Now it is answered like any unparsable body: 400 invalid_request."""
    headers = {"Authorization": f"Bearer {receiver_world.valid[1]}"}
    client = receiver_world.client
    resp = client.post("/receive", data=body, content_type="application/json", headers=headers)
    malformed = client.post(
        "/receive", data=b"{no", content_type="application/json", headers=headers
    )
    assert resp.status_code == malformed.status_code == 400
    assert resp.json["error"] == malformed.json["error"] == "invalid_request"
