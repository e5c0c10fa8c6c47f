"""Attacks on the mock issuer's OAuth 2.0 endpoints that once worked (tests/FAULTS.md): an
error that echoed a secret sent as a parameter name, and a deleted machine's JWT access token
that introspection still called active."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from mock_issuer import db
from tests.issuer_calls import (
    SK,
    TOKEN,
    access_token,
    assert_oauth_error,
    basic_header,
    new_machine,
    post_credentials,
)
from tests.seed import CALLER, RECEIVER, make_issuer_app

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def client(tmp_path) -> Iterator[FlaskClient]:
    yield make_issuer_app(tmp_path).test_client()
    db.close_thread_connections()


def test_a_repeated_parameter_named_like_a_secret_is_not_echoed(client):
    """A client that put its secret where a name goes (`ak_...=1&ak_...=2`) must not get it
    back in the error, which clients log."""
    secret = CALLER.secret_key
    body = f"grant_type=client_credentials&{secret}=1&{secret}=2"
    resp = client.post(TOKEN, data=body, headers={**FORM, **basic_header(CALLER.id, secret)})
    error = assert_oauth_error(resp, 400, "invalid_request")
    assert secret[:12] not in resp.get_data(as_text=True)  # not even the start of it
    assert "repeated" in error["error_description"]


def test_a_repeated_oauth_parameter_is_still_named(client):
    body = "grant_type=client_credentials&grant_type=client_credentials"
    headers = {**FORM, **basic_header(CALLER.id, CALLER.secret_key)}
    resp = client.post(TOKEN, data=body, headers=headers)
    assert "grant_type" in assert_oauth_error(resp, 400, "invalid_request")["error_description"]


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_a_deleted_machines_access_tokens_are_inactive_at_introspection(client, token_format):
    """Deleting a machine ends its opaque tokens (their rows go); its JWT access tokens must
    not stay `active` at the issuer's live check either."""
    machine = new_machine(client, "doomed", scoped_machines=[RECEIVER.id])
    secret = client.get(f"/v1/machines/{machine['id']}/secret_key", headers=SK).json["secret"]
    data = {"grant_type": "client_credentials", "token_format": token_format}
    resp = client.post(TOKEN, data=data, headers=basic_header(machine["id"], secret))
    token = resp.json["access_token"]
    ask = {"token": token, **post_credentials(RECEIVER)}
    assert client.post("/oauth/introspect", data=ask).json["active"] is True
    assert client.delete(f"/v1/machines/{machine['id']}", headers=SK).status_code == 200
    assert client.post("/oauth/introspect", data=ask).json == {"active": False}


def test_introspection_still_answers_for_a_live_machines_jwt(client):
    token = access_token(client)
    ask = {"token": token, **post_credentials(RECEIVER)}
    assert client.post("/oauth/introspect", data=ask).json["active"] is True
