"""The mock issuer's OAuth 2.0 token endpoint (client credentials, RFC 6749 §4.4 with RFC 8707
resource indicators and RFC 9068 JWT access tokens) through Flask's test client: every success
path and every error answer of RFC 6749 §5.2."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import jwt
import pytest
from flask.testing import FlaskClient

from mock_issuer import db, ids, tokens
from tests.issuer_calls import (
    GRANT,
    TOKEN,
    access_token,
    assert_no_store,
    assert_oauth_error,
    basic_header,
    new_machine,
    post_credentials,
    request_token,
)
from tests.seed import CALLER, ISSUER_URL, OUTSIDER, RECEIVER, SK, SeedMachine, make_issuer_app


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[FlaskClient]:
    """One issuer for the tests that only add tokens and machines."""
    yield make_issuer_app(tmp_path_factory.mktemp("issuer-oauth-token")).test_client()
    db.close_thread_connections()


@pytest.fixture
def fresh_client(tmp_path) -> Iterator[FlaskClient]:
    """A fresh issuer, for counts that other tests must not disturb."""
    yield make_issuer_app(tmp_path).test_client()
    db.close_thread_connections()


def decode_access_token(client: FlaskClient, token: str, audience: str = RECEIVER.id) -> dict:
    """RFC 9068 §4 checks with PyJWT: the key from the JWKS, RS256 pinned, type, issuer,
    audience, expiry and the required claims."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    keys = {k["kid"]: k for k in client.get("/.well-known/jwks.json").json["keys"]}
    return jwt.decode(
        token,
        jwt.PyJWK(keys[header["kid"]]).key,
        algorithms=["RS256"],
        audience=audience,
        issuer=ISSUER_URL,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"]},
    )


def fan_out_machines(client: FlaskClient) -> tuple[dict, dict, dict]:
    """Two new target machines and a new client scoped to both (the created objects, each with
    its `secret_key`)."""
    first = new_machine(client, "oauth-target-1")
    second = new_machine(client, "oauth-target-2")
    caller = new_machine(client, "oauth-fan-out", scoped_machines=[first["id"], second["id"]])
    return first, second, caller


def as_seed(machine: dict) -> SeedMachine:
    return SeedMachine(machine["id"], machine["name"], machine["secret_key"])


# ---- successful requests ----


@pytest.mark.parametrize("method", ["post", "basic"])
def test_both_client_authentication_methods_get_a_bearer_token_never_cached(client, method):
    resp = request_token(client, method=method)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert_no_store(resp)
    body = resp.json
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600  # the machine's default token lifetime
    assert body["scope"] == RECEIVER.id


def test_jwt_access_token_follows_rfc_9068_and_is_signed_by_the_active_key(client):
    token = access_token(client)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt"
    active_kid = client.get("/v1/jwks", headers=SK).json["keys"][0]["kid"]
    assert header["kid"] == active_kid
    claims = decode_access_token(client, token)
    assert claims["iss"] == ISSUER_URL
    assert claims["sub"] == claims["client_id"] == CALLER.id
    assert claims["aud"] == RECEIVER.id and claims["scope"] == RECEIVER.id
    assert claims["exp"] - claims["iat"] == 3600
    assert ids.is_token_id(claims["jti"])
    assert "cat" not in header and "scopes" not in claims  # not Clerk's M2M JWT profile


def test_each_token_gets_its_own_jti(client):
    first, second = (decode_access_token(client, access_token(client)) for _ in range(2))
    assert first["jti"] != second["jti"]


def test_without_a_target_the_audience_is_every_machine_the_client_may_call(client):
    first, second, caller = fan_out_machines(client)
    token = access_token(client, as_seed(caller))
    claims = decode_access_token(client, token, audience=first["id"])
    assert sorted(claims["aud"]) == sorted([first["id"], second["id"]])
    assert sorted(claims["scope"].split()) == sorted([first["id"], second["id"]])


@pytest.mark.parametrize("param", ["resource", "audience"])
def test_resource_or_audience_narrows_the_token_to_that_machine(client, param):
    first, second, caller = fan_out_machines(client)
    resp = request_token(client, as_seed(caller), **{param: second["id"]})
    assert resp.status_code == 200 and resp.json["scope"] == second["id"]
    claims = decode_access_token(client, resp.json["access_token"], audience=second["id"])
    assert claims["aud"] == second["id"]
    with pytest.raises(jwt.InvalidAudienceError):
        decode_access_token(client, resp.json["access_token"], audience=first["id"])


def test_repeated_resource_and_audience_together_name_several_targets(client):
    first, second, caller = fan_out_machines(client)
    resp = client.post(
        TOKEN,
        data={**GRANT, "resource": [first["id"]], "audience": second["id"]},
        headers=basic_header(caller["id"], caller["secret_key"]),
    )
    assert resp.status_code == 200
    claims = decode_access_token(client, resp.json["access_token"], audience=first["id"])
    assert claims["aud"] == [first["id"], second["id"]]


def test_scope_of_machine_ids_names_the_targets(client):
    first, _second, caller = fan_out_machines(client)
    resp = request_token(client, as_seed(caller), scope=first["id"])
    assert resp.status_code == 200 and resp.json["scope"] == first["id"]
    assert decode_access_token(client, resp.json["access_token"], audience=first["id"])


def test_scope_may_narrow_the_resources(client):
    first, second, caller = fan_out_machines(client)
    resp = client.post(
        TOKEN,
        data={
            **GRANT,
            **post_credentials(as_seed(caller)),
            "resource": [first["id"], second["id"]],
            "scope": second["id"],
        },
    )
    assert resp.status_code == 200 and resp.json["scope"] == second["id"]
    claims = decode_access_token(client, resp.json["access_token"], audience=first["id"])
    assert claims["aud"] == [first["id"], second["id"]] and claims["scope"] == second["id"]


def test_opaque_token_is_stored_as_a_hash_and_verifies_on_the_m2m_route(client):
    app = client.application
    resp = request_token(client, token_format="opaque")
    assert resp.status_code == 200
    token = resp.json["access_token"]
    assert token.startswith("mt_") and len(token) == 67
    with app.app_context():
        conn = db.connect(app.extensions["settings"].mock_issuer_db)
        row = conn.execute(
            "SELECT subject, scopes, token_hash, wrapped FROM m2m_tokens WHERE token_hash = ?",
            (ids.secret_hash(token),),
        ).fetchone()
    assert row["subject"] == CALLER.id and row["wrapped"] is None
    verified = client.post(
        "/m2m_tokens/verify",
        json={"token": token},
        headers={"Authorization": f"Bearer {RECEIVER.secret_key}"},
    )
    assert verified.status_code == 200 and verified.json["scopes"] == [RECEIVER.id]


def test_unknown_parameters_are_ignored(client):
    assert request_token(client, state="xyz", foo="bar").status_code == 200


def test_a_rotated_out_key_no_longer_authenticates(fresh_client):
    client = fresh_client
    rotated = client.post(
        f"/v1/machines/{CALLER.id}/secret_key/rotate", json={"previous_token_ttl": 0}, headers=SK
    )
    assert rotated.status_code == 200
    assert_oauth_error(request_token(client), 401, "invalid_client")
    fresh = SeedMachine(CALLER.id, CALLER.name, rotated.json["secret"])
    assert request_token(client, fresh).status_code == 200


# ---- errors (RFC 6749 §5.2, RFC 8707 §2) ----


def test_no_client_authentication_is_invalid_client_with_a_basic_challenge(client):
    assert_oauth_error(client.post(TOKEN, data=GRANT), 401, "invalid_client")


@pytest.mark.parametrize("method", ["post", "basic"])
def test_a_wrong_secret_is_invalid_client(client, method):
    wrong = SeedMachine(CALLER.id, CALLER.name, "ak_" + "f" * 32)
    body = assert_oauth_error(request_token(client, wrong, method), 401, "invalid_client")
    assert wrong.secret_key not in body["error_description"]


@pytest.mark.parametrize("method", ["post", "basic"])
def test_another_machines_secret_is_invalid_client(client, method):
    mixed = SeedMachine(CALLER.id, CALLER.name, RECEIVER.secret_key)
    assert_oauth_error(request_token(client, mixed, method), 401, "invalid_client")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer " + CALLER.secret_key,
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Basic",
        "Basic \u00e9t\u00e9",
    ],
    ids=["bearer-scheme", "not-base64", "no-colon", "not-utf8", "empty", "not-ascii"],
)
def test_a_malformed_authorization_header_is_invalid_client(client, header):
    resp = client.post(TOKEN, data=GRANT, headers={"Authorization": header})
    assert_oauth_error(resp, 401, "invalid_client")


def test_two_authentication_methods_at_once_are_invalid_request(client):
    resp = client.post(
        TOKEN,
        data={**GRANT, **post_credentials(CALLER)},
        headers=basic_header(CALLER.id, CALLER.secret_key),
    )
    assert_oauth_error(resp, 400, "invalid_request")


def test_a_body_client_id_that_differs_from_basic_is_invalid_request(client):
    resp = client.post(
        TOKEN,
        data={**GRANT, "client_id": RECEIVER.id},
        headers=basic_header(CALLER.id, CALLER.secret_key),
    )
    assert_oauth_error(resp, 400, "invalid_request")


def test_client_secret_without_client_id_is_invalid_request(client):
    resp = client.post(TOKEN, data={**GRANT, "client_secret": CALLER.secret_key})
    assert_oauth_error(resp, 400, "invalid_request")


def test_missing_grant_type_is_invalid_request(client):
    resp = client.post(TOKEN, data=post_credentials(CALLER))
    assert "grant_type" in assert_oauth_error(resp, 400, "invalid_request")["error_description"]


@pytest.mark.parametrize("grant_type", ["authorization_code", "password", "refresh_token", "x"])
def test_other_grant_types_are_unsupported(client, grant_type):
    resp = request_token(client, grant_type=grant_type)
    assert_oauth_error(resp, 400, "unsupported_grant_type")


@pytest.mark.parametrize(
    "target",
    [RECEIVER.id.replace("receiver", "nobodyxx"), OUTSIDER.id, "https://api.example/", "x" * 300],
    ids=["unknown-machine", "not-scoped", "a-url", "long-garbage"],
)
@pytest.mark.parametrize("param", ["resource", "audience"])
def test_a_target_the_client_may_not_call_is_invalid_target(client, param, target):
    body = assert_oauth_error(request_token(client, **{param: target}), 400, "invalid_target")
    assert "x" * 50 not in body["error_description"]  # input is never echoed unchecked


def test_an_empty_resource_is_invalid_target(client):
    resp = client.post(TOKEN, data={**GRANT, **post_credentials(CALLER), "resource": ["", ""]})
    assert_oauth_error(resp, 400, "invalid_target")


@pytest.mark.parametrize("scope", [OUTSIDER.id, f"{RECEIVER.id} {OUTSIDER.id}", "read:all"])
def test_a_scope_beyond_the_clients_machines_is_invalid_scope(client, scope):
    assert_oauth_error(request_token(client, scope=scope), 400, "invalid_scope")


def test_a_scope_outside_the_requested_resources_is_invalid_scope(client):
    first, second, caller = fan_out_machines(client)
    resp = request_token(client, as_seed(caller), resource=first["id"], scope=second["id"])
    assert_oauth_error(resp, 400, "invalid_scope")


def test_a_client_scoped_to_no_machine_is_unauthorized_client(client):
    assert_oauth_error(request_token(client, OUTSIDER), 400, "unauthorized_client")


def test_a_repeated_parameter_is_invalid_request(client):
    resp = client.post(
        TOKEN, data={**post_credentials(CALLER), "grant_type": ["client_credentials"] * 2}
    )
    assert_oauth_error(resp, 400, "invalid_request")


def test_a_json_body_is_invalid_request(client):
    resp = client.post(TOKEN, json={**GRANT, **post_credentials(CALLER)})
    assert_oauth_error(resp, 400, "invalid_request")


@pytest.mark.parametrize("field", ["client_secret", "client_id"])
def test_credentials_in_the_url_are_invalid_request(client, field):
    resp = client.post(
        f"{TOKEN}?{field}=x", data=GRANT, headers=basic_header(CALLER.id, CALLER.secret_key)
    )
    assert_oauth_error(resp, 400, "invalid_request")


def test_an_unknown_token_format_is_invalid_request(client):
    assert_oauth_error(request_token(client, token_format="paseto"), 400, "invalid_request")


@pytest.mark.parametrize("path", [TOKEN, "/oauth/introspect", "/oauth/revoke"])
def test_other_methods_than_post_are_refused_as_oauth_errors(client, path):
    resp = client.get(path)
    assert_oauth_error(resp, 405, "invalid_request")
    assert resp.headers["Allow"] == "POST"


def test_an_oversize_body_is_an_oauth_error(client):
    resp = request_token(client, padding="x" * 70_000)
    assert_oauth_error(resp, 413, "invalid_request")


def test_a_jwt_too_long_for_verifiers_is_refused_and_opaque_still_works(fresh_client):
    client = fresh_client
    targets = [new_machine(client, f"wide-{i}")["id"] for i in range(150)]
    wide = as_seed(new_machine(client, "wide-caller", scoped_machines=targets))
    body = assert_oauth_error(request_token(client, wide), 400, "invalid_request")
    assert "token_format=opaque" in body["error_description"]
    assert str(tokens.MAX_TOKEN_LENGTH) in body["error_description"]
    assert request_token(client, wide, token_format="opaque").status_code == 200


# ---- usage, metrics and fault injection see the OAuth routes ----


def test_token_creations_are_usage_records_and_metrics(fresh_client):
    client = fresh_client
    access_token(client)
    access_token(client, token_format="opaque")
    access_token(client, token_format="opaque")
    assert_oauth_error(request_token(client, OUTSIDER), 400, "unauthorized_client")
    usage = client.get(f"/v1/usage?machine_id={CALLER.id}", headers=SK).json
    assert usage["totals"]["creations"] == {"opaque": 2, "jwt": 1, "total": 3}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'mock_issuer_token_creations_total{format="jwt"} 1.0' in metrics
    assert 'mock_issuer_token_creations_total{format="opaque"} 2.0' in metrics
    assert 'route="/oauth/token",status="200"' in metrics
    assert 'route="/oauth/token",status="400"' in metrics


def test_fault_rules_match_the_token_endpoint_and_answer_oauth_errors(fresh_client):
    client = fresh_client
    rule = {"route": "POST /oauth/token", "status": 503, "retry_after": 7, "count": 1}
    assert client.put("/v1/_faults", json={"rules": [rule]}, headers=SK).status_code == 200
    resp = request_token(client)
    assert_oauth_error(resp, 503, "temporarily_unavailable")
    assert resp.headers["Retry-After"] == "7"
    assert request_token(client).status_code == 200  # count: 1 spent
    (counted,) = client.get("/v1/_faults", headers=SK).json["rules"]
    assert (counted["matched"], counted["faulted"]) == (2, 1)
