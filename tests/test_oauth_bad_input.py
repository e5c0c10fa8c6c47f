"""Bad input against the issuer's OAuth 2.0 endpoints (Hypothesis): random, malformed and
oddly encoded forms, bodies and Authorization headers never give a 5xx, every refusal is an
RFC 6749 §5.2 error, and no answer repeats a client secret."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from mock_issuer import db
from tests.faults_strategies import (
    CONTENT_TYPES,
    HEADER_TEXT,
    RAW_BODIES,
    TEXT,
    authorizations,
    fuzz_settings,
    query_strings,
)
from tests.issuer_calls import OAUTH_ERROR_FIELDS, access_token, assert_no_store
from tests.seed import CALLER, OUTSIDER, RECEIVER, make_issuer_app

PATHS = ["/oauth/token", "/oauth/introspect", "/oauth/revoke"]
FIELDS = [
    "grant_type",
    "client_id",
    "client_secret",
    "resource",
    "audience",
    "scope",
    "token_format",
    "token",
    "token_type_hint",
]
MACHINES = [CALLER, RECEIVER, OUTSIDER]
SECRETS = [m.secret_key for m in MACHINES]
VALUES = st.one_of(
    TEXT,
    st.sampled_from(
        ["client_credentials", "jwt", "opaque", "access_token", *SECRETS, *(m.id for m in MACHINES)]
    ),
)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


AUTHORIZATIONS = st.one_of(
    authorizations(SECRETS),
    st.builds(basic, st.sampled_from([m.id for m in MACHINES]), st.sampled_from(SECRETS)),
    st.builds(basic, TEXT, TEXT),
    HEADER_TEXT.map(lambda t: f"Basic {t}"),
)
FORMS = st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), max_size=8).map(
    lambda pairs: urlencode(pairs).encode()
)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[FlaskClient]:
    yield make_issuer_app(tmp_path_factory.mktemp("issuer-oauth-fuzz")).test_client()
    db.close_thread_connections()


@pytest.fixture(scope="module")
def live_tokens(client) -> list[str]:
    return [access_token(client), access_token(client, token_format="opaque")]


@fuzz_settings(300)
@given(
    path=st.sampled_from(PATHS),
    body=st.one_of(FORMS, FORMS, st.none(), RAW_BODIES),
    content_type=st.one_of(st.just("application/x-www-form-urlencoded"), CONTENT_TYPES),
    authorization=AUTHORIZATIONS,
    query=query_strings(set(FIELDS)),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
)
def test_bad_input_never_breaks_the_oauth_endpoints(
    client, live_tokens, path, body, content_type, authorization, query, method
):
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if content_type is not None:
        headers["Content-Type"] = content_type
    resp = client.open(path, method=method, data=body, headers=headers, query_string=query)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert resp.headers["Content-Type"] == "application/json"
    assert_no_store(resp)
    text = resp.get_data(as_text=True)
    assert not any(secret in text for secret in SECRETS)
    if resp.status_code != 200:
        assert set(resp.json) == OAUTH_ERROR_FIELDS
    if resp.status_code == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Basic ")
