import pytest
from orders_service import create_app


@pytest.fixture
def client(m2m_env, m2m_receiver):
    """The service under test, configured as the receiver machine of the test issuer."""
    return create_app(m2m_env(m2m_receiver)).test_client()


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_a_scoped_caller_gets_the_orders(client, m2m_token, m2m_caller, token_format):
    answer = client.get("/orders", headers=m2m_token(format=token_format).headers)
    assert answer.status_code == 200
    assert answer.json["caller"] == m2m_caller.id


def test_every_kind_of_bad_token_is_refused(client, m2m_bad_token, m2m_bad_token_kind):
    answer = client.get("/orders", headers=m2m_bad_token(m2m_bad_token_kind).headers)
    assert answer.status_code == 401, f"the service accepted a {m2m_bad_token_kind} token"


def test_an_issuer_outage_is_a_503_not_a_pass(client, m2m_token, m2m_faults):
    token = m2m_token(format="opaque")
    m2m_faults.down()
    assert client.get("/orders", headers=token.headers).status_code == 503
