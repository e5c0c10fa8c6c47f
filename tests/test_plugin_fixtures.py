"""The plugin's fixtures used directly: what the tokens carry, each bad token refused by our
own receiver for the reason its kind names, faults that take effect and are undone, the env
helper, and the in-process issuer."""

from __future__ import annotations

import jwt
import pytest
import requests

import receiver_app
from m2m_harness.fault_injection import IssuerFaults
from m2m_harness.issuer import for_app
from m2m_harness.issuer_client import IssuerError

# What receiver_app answers to each kind: the check that caught it.
REFUSED_BECAUSE = {
    "expired": "token has expired",
    "not_yet_valid": "token is not valid yet",
    "wrong_audience": "token is not meant for this receiver",
    "revoked": "token is invalid, expired or revoked",
    "unknown_key": "token signing key is unknown",
    "tampered": "token signature is invalid",
    "alg_none": "token format is not recognised",
    "wrong_issuer": "token issuer is not trusted",
    "not_scoped": "token is invalid, expired or revoked",
    "garbage": "token format is not recognised",
}


@pytest.fixture
def receiver(m2m_env, m2m_receiver):
    return receiver_app.create_app(m2m_env(m2m_receiver)).test_client()


def test_every_bad_token_is_refused_by_the_check_its_kind_names(
    receiver, m2m_bad_token, m2m_bad_token_kind
) -> None:
    answer = receiver.post("/receive", json={}, headers=m2m_bad_token(m2m_bad_token_kind).headers)
    assert answer.status_code == 401
    assert answer.get_json()["error_description"] == REFUSED_BECAUSE[m2m_bad_token_kind]


def test_an_unknown_bad_token_kind_is_a_clear_error(m2m_bad_token) -> None:
    with pytest.raises(ValueError, match="unknown bad-token kind 'stale'"):
        m2m_bad_token("stale")


def test_a_jwt_carries_the_lifetime_claims_caller_and_audience_asked_for(
    m2m_issuer, m2m_token, m2m_machines, m2m_caller
) -> None:
    audience = m2m_machines("billing")
    minted = m2m_token(format="jwt", lifetime=90, claims={"tenant": "t1"}, audience=audience)
    keys = jwt.PyJWKClient(m2m_issuer.jwks_url)
    claims = jwt.decode(
        minted.token,
        keys.get_signing_key_from_jwt(minted.token).key,
        algorithms=["RS256"],
        audience=audience.id,
        issuer=m2m_issuer.url,
    )
    assert claims["sub"] == m2m_caller.id and claims["tenant"] == "t1"
    assert 90 <= claims["exp"] - claims["iat"] <= 91


def test_an_opaque_token_is_the_default_and_verifies_for_its_audience(
    m2m_issuer, m2m_token, m2m_receiver
) -> None:
    minted = m2m_token()
    assert minted.format == "opaque" and minted.token.startswith("mt_")
    verified = m2m_issuer.client.verify_token(minted.token, key=m2m_receiver.secret_key)
    assert verified["id"] == minted.id and m2m_receiver.id in verified["scopes"]


def test_down_refuses_connections_and_clear_brings_the_same_issuer_back(
    m2m_issuer, m2m_faults, m2m_receiver
) -> None:
    m2m_faults.down()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{m2m_issuer.url}/healthz", timeout=2)
    m2m_faults.clear()
    assert m2m_issuer.client.call("GET", f"/v1/machines/{m2m_receiver.id}")["id"] == m2m_receiver.id


def test_error_rate_limit_and_delay_rules_apply_until_cleared(m2m_issuer) -> None:
    faults = IssuerFaults(m2m_issuer)
    faults.rate_limited("GET /v1/jwks", retry_after=3, count=1)
    faults.error(502, "GET /v1/jwks", count=1)
    faults.slow(0.2, "GET /v1/jwks", count=1)
    statuses = []
    for _ in range(2):
        with pytest.raises(IssuerError) as failed:
            m2m_issuer.client.jwks()
        statuses.append(failed.value.status)
    assert statuses == [429, 502]
    assert m2m_issuer.client.jwks()["keys"]  # the third rule delayed it, then served it
    assert [rule["faulted"] for rule in faults.rules()] == [1, 1, 1]
    faults.clear()
    assert faults.rules() == []


def test_env_names_the_issuer_and_the_machine_as_clerk_does(m2m_env, m2m_issuer, m2m_receiver):
    env = m2m_env(m2m_receiver, instance_key=True, EXTRA="1")
    assert env == {
        "CLERK_API_URL": m2m_issuer.url,
        "CLERK_JWKS_URL": f"{m2m_issuer.url}/.well-known/jwks.json",
        "CLERK_JWT_ISSUER": m2m_issuer.url,
        "CLERK_MACHINE_SECRET_KEY": m2m_receiver.secret_key,
        "CLERK_MACHINE_ID": m2m_receiver.id,
        "CLERK_SECRET_KEY": m2m_issuer.secret_key,
        "EXTRA": "1",
    }


class TestInProcessIssuer:
    """`m2m_issuer` overridden with the in-process app: the factories work unchanged."""

    @pytest.fixture
    def m2m_issuer(self, m2m_issuer_app):
        return for_app(m2m_issuer_app)

    def test_machines_tokens_and_bad_tokens_work_without_a_process(
        self, m2m_issuer, m2m_token, m2m_bad_token, m2m_receiver
    ) -> None:
        assert m2m_issuer.process is None
        minted = m2m_token(format="jwt")
        assert minted.scopes == (m2m_receiver.id,)
        expired = m2m_bad_token("expired").token
        with pytest.raises(IssuerError) as refused:
            m2m_issuer.client.verify_token(expired)
        assert refused.value.status == 404
