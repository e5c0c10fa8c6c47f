"""Calls to an in-process mock issuer through Flask's test client, and the checks its answers
must pass: Clerk's Backend API (machines, M2M tokens, Clerk's error envelope) and the OAuth 2.0
token endpoint (RFC 6749 client credentials and §5.2 errors)."""

from __future__ import annotations

import base64
from urllib.parse import quote

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.seed import CALLER, RECEIVER, SK, SeedMachine

# ---- Clerk's Backend API ----


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_machine(client: FlaskClient, name: str = "m", **body) -> dict:
    resp = client.post("/v1/machines", json={"name": name, **body}, headers=SK)
    assert resp.status_code == 200, resp.json
    return resp.json


def mint(client: FlaskClient, key: str = CALLER.secret_key, path="/v1/m2m_tokens", **body) -> dict:
    resp = client.post(path, json=body, headers=bearer(key))
    assert resp.status_code == 201, resp.json
    return resp.json


def verify(client: FlaskClient, token: str, key: str = RECEIVER.secret_key, field="token"):
    return client.post("/m2m_tokens/verify", json={field: token}, headers=bearer(key))


def assert_clerk_error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.data
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json
    assert body["errors"][0]["code"] == code, body
    assert body["errors"][0]["message"] and body["errors"][0]["long_message"]
    assert body["clerk_trace_id"]
    return body["errors"][0]


# ---- the OAuth 2.0 token endpoint ----

TOKEN = "/oauth/token"
GRANT = {"grant_type": "client_credentials"}
OAUTH_ERROR_FIELDS = {"error", "error_description"}


def post_credentials(machine: SeedMachine) -> dict[str, str]:
    return {"client_id": machine.id, "client_secret": machine.secret_key}


def basic_header(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 §2.3.1: id and secret form-encoded, joined by a colon, base64."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def request_token(
    client: FlaskClient, machine: SeedMachine = CALLER, method: str = "post", **params
) -> TestResponse:
    """POST the token endpoint as `machine`, authenticated by `method` (post or basic)."""
    data: dict = {**GRANT, **params}
    headers = {}
    if method == "post":
        data.update(post_credentials(machine))
    else:
        headers = basic_header(machine.id, machine.secret_key)
    return client.post(TOKEN, data=data, headers=headers)


def access_token(client: FlaskClient, machine: SeedMachine = CALLER, **params) -> str:
    resp = request_token(client, machine, **params)
    assert resp.status_code == 200, resp.json
    return resp.json["access_token"]


def assert_no_store(resp: TestResponse) -> None:
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Pragma"] == "no-cache"


def assert_oauth_error(resp: TestResponse, status: int, error: str) -> dict:
    """An RFC 6749 §5.2 answer: the status, JSON with `error` and `error_description` alone."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.headers["Content-Type"] == "application/json"
    assert set(resp.json) == OAUTH_ERROR_FIELDS
    assert resp.json["error"] == error
    assert_no_store(resp)
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith('Basic realm="')
    return resp.json
