"""A machine's default access-token format at the OAuth token endpoint (ours): set through the
seed and `PUT /v1/_oauth_clients/<machine_id>`, overridden by a request's `token_format`, gone
with the machine, and never on Clerk's machine object."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from mock_issuer import db
from tests.issuer_calls import (
    access_token,
    assert_clerk_error,
    bearer,
    new_machine,
    request_token,
)
from tests.seed import CALLER, RECEIVER, SK, make_issuer_app, seed_document

ADMIN = "/v1/_oauth_clients/"


@pytest.fixture
def client(tmp_path) -> Iterator[FlaskClient]:
    yield make_issuer_app(tmp_path).test_client()
    db.close_thread_connections()


def is_jwt(token: str) -> bool:
    return token.count(".") == 2


def set_format(client: FlaskClient, machine_id: str, body: object, headers=SK):
    return client.put(ADMIN + machine_id, json=body, headers=headers)


def stored_rows(client: FlaskClient) -> list[tuple[str, str]]:
    conn = db.connect(client.application.extensions["settings"].mock_issuer_db)
    return [tuple(r) for r in conn.execute("SELECT machine_id, token_format FROM oauth_clients")]


def test_a_machine_issues_jwts_unless_configured_otherwise(client):
    assert is_jwt(access_token(client))
    answer = client.get(ADMIN + CALLER.id, headers=SK)
    assert answer.status_code == 200
    assert answer.json == {"object": "oauth_client", "client_id": CALLER.id, "token_format": "jwt"}


def test_a_machine_configured_opaque_gets_opaque_tokens_unless_the_request_asks_for_a_jwt(client):
    answer = set_format(client, CALLER.id, {"token_format": "opaque"})
    assert answer.status_code == 200, answer.json
    assert answer.json["token_format"] == "opaque"
    assert client.get(ADMIN + CALLER.id, headers=SK).json["token_format"] == "opaque"
    token = access_token(client, resource=RECEIVER.id)
    assert token.startswith("mt_")
    verified = client.post(
        "/oauth/introspect",
        data={"token": token, "client_id": RECEIVER.id, "client_secret": RECEIVER.secret_key},
    ).json
    assert verified["active"] is True and verified["client_id"] == CALLER.id
    assert is_jwt(access_token(client, token_format="jwt"))  # the request's choice wins
    assert set_format(client, CALLER.id, {"token_format": "jwt"}).status_code == 200
    assert is_jwt(access_token(client))
    assert access_token(client, token_format="opaque").startswith("mt_")


def test_clerks_machine_object_keeps_its_shape(client):
    before = client.get(f"/v1/machines/{CALLER.id}", headers=SK).json
    set_format(client, CALLER.id, {"token_format": "opaque"})
    after = client.get(f"/v1/machines/{CALLER.id}", headers=SK).json
    assert set(after) == set(before) and "token_format" not in json.dumps(after)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"token_format": "paseto"}, 422, "form_param_value_invalid"),
        ({"token_format": "JWT"}, 422, "form_param_value_invalid"),
        ({"token_format": ["opaque"]}, 422, "form_param_value_invalid"),
        ({"token_format": None}, 422, "form_param_missing"),
        ({}, 422, "form_param_missing"),
        ({"token_format": "opaque", "ttl": 1}, 400, "request_body_invalid"),
        ("opaque", 400, "request_body_invalid"),
    ],
)
def test_bad_settings_are_refused_in_clerks_error_format_and_change_nothing(
    client, body, status, code
):
    error = assert_clerk_error(set_format(client, CALLER.id, body), status, code)
    assert "token_format" in error["long_message"] or code == "request_body_invalid"
    assert stored_rows(client) == []
    assert is_jwt(access_token(client))


def test_only_the_instance_secret_key_may_read_or_change_the_setting(client):
    for headers in ({}, bearer(CALLER.secret_key), bearer("sk_test_" + "0" * 40)):
        refused = set_format(client, CALLER.id, {"token_format": "opaque"}, headers=headers)
        assert refused.status_code in (401, 403), refused.json
        assert refused.json["errors"][0]["code"]
        assert client.get(ADMIN + CALLER.id, headers=headers).status_code in (401, 403)
    assert stored_rows(client) == []


@pytest.mark.parametrize("machine_id", ["mch_" + "x" * 27, "not-a-machine"])
def test_an_unknown_machine_is_machine_not_found(client, machine_id):
    assert_clerk_error(
        set_format(client, machine_id, {"token_format": "opaque"}), 404, "machine_not_found"
    )
    assert_clerk_error(client.get(ADMIN + machine_id, headers=SK), 404, "machine_not_found")


def test_a_deleted_machines_setting_goes_with_it(client):
    made = new_machine(client, "short-stay", scoped_machines=[RECEIVER.id])
    set_format(client, made["id"], {"token_format": "opaque"})
    set_format(client, CALLER.id, {"token_format": "opaque"})
    assert client.delete(f"/v1/machines/{made['id']}", headers=SK).status_code == 200
    assert stored_rows(client) == [(CALLER.id, "opaque")]
    assert_clerk_error(client.get(ADMIN + made["id"], headers=SK), 404, "machine_not_found")


def test_fault_rules_never_apply_to_the_setting_route(client):
    every_route = {"route": "*", "status": 503}
    rule = client.put("/v1/_faults", json={"rules": [every_route]}, headers=SK)
    assert rule.status_code == 200, rule.json
    assert request_token(client).status_code == 503  # the token endpoint is faulted
    assert set_format(client, CALLER.id, {"token_format": "opaque"}).status_code == 200


def write_seed(workdir: Path, **formats: str) -> str:
    """The path of the test seed with `oauth_token_format` set per machine name (beside the
    plain one make_issuer_app writes)."""
    document = seed_document()
    for entry in document["machines"]:
        if entry["name"] in formats:
            entry["oauth_token_format"] = formats[entry["name"]]
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "oauth-seed.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_the_seed_sets_a_machines_format_only_when_it_creates_the_machine(tmp_path):
    seed_path = write_seed(tmp_path, **{CALLER.name: "opaque"})
    client = make_issuer_app(tmp_path, MOCK_ISSUER_SEED=seed_path).test_client()
    assert access_token(client).startswith("mt_")
    assert client.get(ADMIN + RECEIVER.id, headers=SK).json["token_format"] == "jwt"
    set_format(client, CALLER.id, {"token_format": "jwt"})
    again = make_issuer_app(tmp_path, MOCK_ISSUER_SEED=seed_path).test_client()
    assert is_jwt(access_token(again))  # a restart keeps what was set since
    db.close_thread_connections()


def test_a_seed_with_an_unknown_format_fails_start(tmp_path):
    seed_path = write_seed(tmp_path, **{CALLER.name: "paseto"})
    with pytest.raises(ValueError, match=f"oauth_token_format of '{CALLER.name}' must be jwt"):
        make_issuer_app(tmp_path, MOCK_ISSUER_SEED=seed_path)
    db.close_thread_connections()
