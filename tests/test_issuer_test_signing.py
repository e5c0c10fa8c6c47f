"""`POST /v1/_sign`, the test-only route that signs any claims with the active key: it needs the
instance key, signs exactly what it is sent, and stays outside fault rules and Clerk's surface."""

from __future__ import annotations

import jwt
import pytest
from flask.testing import FlaskClient

from mock_issuer import db
from tests.seed import CALLER, TEST_SECRET_KEY, make_issuer_app

SIGN = "/v1/_sign"
SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> FlaskClient:
    yield make_issuer_app(tmp_path_factory.mktemp("test-signing")).test_client()
    db.close_thread_connections()


def test_signs_exactly_the_claims_sent_with_the_published_active_key(client) -> None:
    claims = {"iss": "https://elsewhere.invalid", "sub": "mch_x", "exp": 1, "custom": [1, 2]}
    answer = client.post(SIGN, json={"claims": claims}, headers=SK).get_json()
    header = jwt.get_unverified_header(answer["token"])
    jwk = next(
        k
        for k in client.get("/v1/jwks", headers=SK).get_json()["keys"]
        if k["kid"] == answer["kid"]
    )
    key = jwt.PyJWK(jwk).key
    decoded = jwt.decode(answer["token"], key, algorithms=["RS256"], options={"verify_exp": False})
    assert decoded == claims
    assert header["kid"] == answer["kid"] and header["cat"] == "cl_B7d4PD333AAA"


@pytest.mark.parametrize("key", ["", CALLER.secret_key, "sk_test_wrong"])
def test_refuses_anyone_but_the_instance_key(client, key) -> None:
    answer = client.post(SIGN, json={"claims": {}}, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 401


@pytest.mark.parametrize("body", [{}, {"claims": [1]}, {"claims": {}, "header": {}}])
def test_refuses_a_body_without_a_claims_object(client, body) -> None:
    answer = client.post(SIGN, json=body, headers=SK)
    assert answer.status_code in (400, 422)
    assert answer.get_json()["errors"][0]["code"]


def test_fault_rules_never_apply_to_it(client) -> None:
    client.put("/v1/_faults", json={"rules": [{"route": "*", "status": 503}]}, headers=SK)
    try:
        assert client.get("/v1/jwks", headers=SK).status_code == 503
        assert client.post(SIGN, json={"claims": {}}, headers=SK).status_code == 200
    finally:
        client.delete("/v1/_faults", headers=SK)


def test_refuses_claims_whose_token_would_be_longer_than_verifiers_read(client) -> None:
    """As `POST /m2m_tokens` does: a 60 kB claim set (under the 64 KiB body limit) would sign a
    token every verifier refuses unread (over 8192 characters), so it is a 422 naming `claims`."""
    answer = client.post(SIGN, json={"claims": {"pad": "x" * 60_000}}, headers=SK)
    assert answer.status_code == 422
    error = answer.get_json()["errors"][0]
    assert error["code"] == "form_param_value_invalid"
    assert error["meta"] == {"param_name": "claims"} and "8192" in error["long_message"]


def test_signs_claims_whose_token_just_fits(client) -> None:
    token = client.post(SIGN, json={"claims": {"pad": "x" * 5_500}}, headers=SK).json["token"]
    assert 7_500 < len(token) <= 8192
