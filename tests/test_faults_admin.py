"""Fault rules and rate-limit emulation through Flask's test client: the admin route, which
requests a rule hits, deterministic shares, count limits, Retry-After, delays, the environment."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mock_issuer import db
from mock_issuer.faults import normalize_path
from mock_issuer.rate_limit import RateLimit
from tests.seed import CALLER, TEST_SECRET_KEY, make_issuer_app

SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
AK = {"Authorization": f"Bearer {CALLER.secret_key}"}
FAULTS = "/v1/_faults"
CREATE = "POST /m2m_tokens"


def make_app(workdir: Path, **config: object) -> Flask:
    return make_issuer_app(workdir, MOCK_ISSUER_URL="http://127.0.0.1:8797", **config)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Flask]:
    yield make_app(tmp_path_factory.mktemp("faults-admin"))
    db.close_thread_connections()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    client = app.test_client()
    yield client
    assert client.delete(FAULTS, headers=SK).status_code == 200


def put(client: FlaskClient, *rules: dict) -> dict:
    resp = client.put(FAULTS, json={"rules": list(rules)}, headers=SK)
    assert resp.status_code == 200, resp.json
    return resp.json


def create(client: FlaskClient, path: str = "/v1/m2m_tokens"):
    return client.post(path, json={}, headers=AK)


def machine(client: FlaskClient):
    return client.get(f"/v1/machines/{CALLER.id}", headers=SK)


def assert_envelope(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.data
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json["errors"][0]["code"] == code
    assert resp.json["clerk_trace_id"]
    return resp.json["errors"][0]


# ---- off by default; the admin route ----


def test_faults_are_off_by_default(client):
    assert create(client).status_code == 201
    state = client.get(FAULTS, headers=SK).json
    assert state == {"object": "fault_rules", "rules": [], "rate_limit": None}


def test_admin_route_requires_the_instance_key(client):
    assert_envelope(client.get(FAULTS), 401, "authorization_header_format_invalid")
    assert_envelope(client.put(FAULTS, json={"rules": []}, headers=AK), 401, "clerk_key_invalid")
    bad_sk = {"Authorization": "Bearer sk_test_wrong"}
    assert_envelope(client.delete(FAULTS, headers=bad_sk), 401, "clerk_key_invalid")


@pytest.mark.parametrize(
    ("rule", "param"),
    [
        ({"route": CREATE, "status": 200}, "status"),
        ({"route": CREATE, "status": 600}, "status"),
        ({"route": CREATE, "status": "503"}, "status"),
        ({"route": CREATE, "status": 503, "share": 0}, "share"),
        ({"route": CREATE, "status": 503, "share": 1.5}, "share"),
        ({"route": CREATE, "status": 503, "share": True}, "share"),
        ({"route": CREATE, "status": 503, "count": 0}, "count"),
        ({"route": CREATE, "delay_seconds": 61}, "delay_seconds"),
        ({"route": CREATE, "delay_seconds": -1}, "delay_seconds"),
        ({"route": CREATE, "status": 503, "retry_after": -1}, "retry_after"),
        ({"route": CREATE, "status": 503, "retry_after": "1"}, "retry_after"),
        ({"route": "POST", "status": 503}, "route"),
        ({"route": "POST m2m_tokens", "status": 503}, "route"),
        ({"route": "POST /m2m_token", "status": 503}, "route"),  # a typo never matches: refused
        ({"route": "GET /m2m_tokens/verify", "status": 503}, "route"),
        ({"route": 7, "status": 503}, "route"),
        ("POST /m2m_tokens", "rules"),
    ],
)
def test_invalid_rules_are_422_naming_the_field(client, rule, param):
    error = assert_envelope(
        client.put(FAULTS, json={"rules": [rule]}, headers=SK), 422, "form_param_value_invalid"
    )
    assert error["meta"]["param_name"] == param


def test_a_rule_without_a_route_or_a_body_without_rules_is_422_missing(client):
    resp = client.put(FAULTS, json={"rules": [{"status": 503}]}, headers=SK)
    assert assert_envelope(resp, 422, "form_param_missing")["meta"]["param_name"] == "route"
    resp = client.put(FAULTS, json={}, headers=SK)
    assert assert_envelope(resp, 422, "form_param_missing")["meta"]["param_name"] == "rules"


def test_an_unknown_route_is_refused_listing_the_routes(client):
    resp = client.put(FAULTS, json={"rules": [{"route": "POST /v1/tokens"}]}, headers=SK)
    error = assert_envelope(resp, 422, "form_param_value_invalid")
    assert "POST /m2m_tokens/verify" in error["long_message"]
    assert "GET /machines/<machine_id>" in error["long_message"]


def test_unknown_fields_are_400_and_nothing_is_set(client):
    resp = client.put(FAULTS, json={"rules": [{"route": "*", "sttaus": 503}]}, headers=SK)
    assert assert_envelope(resp, 400, "request_body_invalid")["meta"]["param_name"] == "sttaus"
    resp = client.put(FAULTS, json={"rulez": []}, headers=SK)
    assert_envelope(resp, 400, "request_body_invalid")
    resp = client.put(FAULTS, json=[{"route": "*", "status": 503}], headers=SK)
    assert_envelope(resp, 400, "request_body_invalid")
    assert client.get(FAULTS, headers=SK).json["rules"] == []


@pytest.mark.parametrize("rules", [{}, 0, False, "", [{"route": "*", "status": 503}] * 51])
def test_rules_that_are_not_a_list_of_at_most_50_are_422(client, rules):
    resp = client.put(FAULTS, json={"rules": rules}, headers=SK)
    assert assert_envelope(resp, 422, "form_param_value_invalid")["meta"]["param_name"] == "rules"


def test_null_fields_mean_their_defaults_and_retry_after_0_is_kept(client):
    put(
        client,
        {
            "route": "GET /v1/machines",
            "status": 503,
            "share": None,
            "count": None,
            "delay_seconds": None,
            "retry_after": 0,
        },
    )
    resp = client.get("/v1/machines", headers=SK)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "0"


# ---- what a faulted answer looks like ----


@pytest.mark.parametrize(
    ("status", "code", "retry_after"),
    [
        (429, "too_many_requests", "7"),
        (503, "service_unavailable", "7"),
        (500, "internal_clerk_error", None),
        (502, "bad_gateway", None),
        (504, "gateway_timeout", None),
        (418, "injected_fault", None),
    ],
)
def test_faulted_answers_use_the_envelope_and_429_503_say_when_to_retry(
    client, status, code, retry_after
):
    put(client, {"route": CREATE, "status": status, "retry_after": 7})
    resp = create(client)
    error = assert_envelope(resp, status, code)
    assert "fault rule on POST /m2m_tokens" in error["long_message"]
    assert resp.headers.get("Retry-After") == retry_after


# ---- which requests a rule hits ----


def test_a_route_is_the_issuers_route_with_v1_optional_and_an_exact_method(client):
    put(client, {"route": "POST /v1/m2m_tokens", "status": 503})
    assert create(client, "/v1/m2m_tokens").status_code == 503
    assert create(client, "/m2m_tokens").status_code == 503
    verify = client.post("/m2m_tokens/verify", json={"token": "mt_x"}, headers=SK)
    assert verify.status_code == 404  # another route: unknown token, not faulted
    assert client.get(f"/m2m_tokens?subject={CALLER.id}", headers=SK).status_code == 200
    put(client, {"route": "GET /machines/<machine_id>", "status": 503})
    assert machine(client).status_code == 503  # any machine id
    assert client.get(f"/v1/machines/{CALLER.id}/secret_key", headers=SK).status_code == 200
    assert client.get("/v1/machines", headers=SK).status_code == 200
    assert client.patch(f"/v1/machines/{CALLER.id}", json={}, headers=SK).status_code == 200


def test_star_faults_every_api_route_but_never_healthz_or_the_admin_route(client):
    put(client, {"route": "*", "status": 500})
    assert create(client).status_code == 500
    assert client.get("/.well-known/jwks.json").status_code == 500
    assert client.get("/v1/jwks", headers=SK).status_code == 500
    assert client.get("/v1/no_such_route", headers=SK).status_code == 500
    assert client.get("/healthz").status_code == 200
    assert client.get(FAULTS, headers=SK).status_code == 200


def test_share_is_deterministic_exactly_floor_n_times_share_of_n(client):
    put(client, {"route": "GET /v1/machines/<machine_id>", "status": 503, "share": 0.25})
    statuses = [machine(client).status_code for _ in range(8)]
    assert statuses == [200, 200, 200, 503, 200, 200, 200, 503]
    put(client, {"route": "GET /v1/machines/<machine_id>", "status": 503, "share": 2 / 3})
    statuses = [machine(client).status_code for _ in range(6)]
    assert statuses.count(503) == 4 and statuses[:3].count(503) == 2
    put(client, {"route": "GET /v1/machines/<machine_id>", "status": 503, "share": 0.29})
    assert [machine(client).status_code for _ in range(100)].count(503) == 29


def test_count_limits_the_faults_and_the_counters_say_so(client):
    put(client, {"route": CREATE, "status": 503, "count": 3})
    assert [create(client).status_code for _ in range(5)] == [503, 503, 503, 201, 201]
    rule = client.get(FAULTS, headers=SK).json["rules"][0]
    assert (rule["matched"], rule["faulted"]) == (5, 3)


def test_the_first_rule_that_faults_decides_and_later_rules_see_only_what_passes(client):
    put(
        client,
        {"route": CREATE, "status": 429, "count": 1},
        {"route": "*", "status": 500, "count": 1},
        {"route": CREATE},
    )
    assert [create(client).status_code for _ in range(3)] == [429, 500, 201]
    rules = client.get(FAULTS, headers=SK).json["rules"]
    assert [(r["matched"], r["faulted"]) for r in rules] == [(3, 1), (2, 1), (1, 0)]


def test_a_rule_without_status_or_delay_counts_its_requests_and_faults_none(client):
    put(client, {"route": CREATE})
    assert create(client, "/v1/m2m_tokens").status_code == 201
    assert create(client, "/m2m_tokens").status_code == 201
    assert machine(client).status_code == 200
    rule = client.get(FAULTS, headers=SK).json["rules"][0]
    assert (rule["route"], rule["matched"], rule["faulted"]) == (CREATE, 2, 0)


def test_replacing_the_rules_restarts_the_counters_and_delete_clears_them(client):
    put(client, {"route": CREATE, "status": 503, "count": 1})
    assert create(client).status_code == 503
    rule = put(client, {"route": CREATE, "status": 503, "count": 1})["rules"][0]
    assert (rule["matched"], rule["faulted"]) == (0, 0)
    assert create(client).status_code == 503
    assert client.delete(FAULTS, headers=SK).json["rules"] == []
    assert create(client).status_code == 201


# ---- delays ----


def test_a_delay_without_status_is_then_served_normally(client):
    put(client, {"route": CREATE, "delay_seconds": 0.3})
    started = time.monotonic()
    assert create(client).status_code == 201
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("status", [429, 503])
def test_a_delay_then_a_status_sends_the_rules_retry_after(client, status):
    put(client, {"route": CREATE, "delay_seconds": 0.1, "status": status, "retry_after": 7})
    started = time.monotonic()
    resp = create(client)
    assert time.monotonic() - started >= 0.1
    assert resp.status_code == status
    assert resp.headers["Retry-After"] == "7"


# ---- rate limit ----


def test_rate_limit_answers_429_with_retry_after_once_the_window_is_used_up(tmp_path):
    client = make_app(tmp_path, MOCK_ISSUER_RATE_LIMIT="3/600s").test_client()
    assert client.get(FAULTS, headers=SK).json["rate_limit"] == {"limit": 3, "window_seconds": 600}
    assert [machine(client).status_code for _ in range(3)] == [200, 200, 200]
    resp = create(client)
    error = assert_envelope(resp, 429, "too_many_requests")
    assert "rate limit of 3 requests per 600 s" in error["long_message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 600
    assert client.get("/healthz").status_code == 200  # never limited
    assert client.get(FAULTS, headers=SK).status_code == 200
    db.close_thread_connections()


def test_rate_limit_presets_are_clerks_limits():
    assert RateLimit.parse("development") == RateLimit(100, 10)
    assert RateLimit.parse("production") == RateLimit(1000, 10)
    assert RateLimit.parse(" 20 / 5s ") == RateLimit(20, 5)
    assert RateLimit.parse("off") is None and RateLimit.parse("") is None
    for bad in ("0/10s", "10/0s", "10/s", "ten/10s", "10/10m"):
        with pytest.raises(RuntimeError, match="MOCK_ISSUER_RATE_LIMIT"):
            RateLimit.parse(bad)


def test_paths_are_normalized_without_v1_and_trailing_slash():
    assert normalize_path("/v1/m2m_tokens/verify/") == "/m2m_tokens/verify"
    assert normalize_path("/v1") == "/"
    assert normalize_path("/v10/x") == "/v10/x"


# ---- the environment ----


def test_environment_faults_apply_at_start_and_are_logged_without_keys(tmp_path, caplog):
    rules = {"rules": [{"route": "post   /v1/m2m_tokens/", "status": 503, "count": 1}]}
    with caplog.at_level(logging.INFO, logger="mock_issuer"):
        app = make_app(
            tmp_path, MOCK_ISSUER_FAULTS=json.dumps(rules), MOCK_ISSUER_RATE_LIMIT="development"
        )
    client = app.test_client()
    state = client.get(FAULTS, headers=SK).json
    assert state["rules"][0]["route"] == CREATE
    assert state["rate_limit"] == {"limit": 100, "window_seconds": 10}
    assert create(client).status_code == 503
    assert create(client).status_code == 201
    on = [r.getMessage() for r in caplog.records if "from the environment" in r.getMessage()]
    assert len(on) == 1
    assert (
        "POST /m2m_tokens -> 503 (at most 1)" in on[0]
        and "rate limit of 100 requests per 10 s" in on[0]
    )
    assert TEST_SECRET_KEY not in caplog.text and CALLER.secret_key not in caplog.text
    db.close_thread_connections()


def test_environment_faults_apply_once_per_server_start_not_per_app(tmp_path):
    """A second app on the same database in the same server (as a gunicorn worker replaced
    after a crash) keeps what was set at run time instead of re-applying the environment."""
    env = {"MOCK_ISSUER_FAULTS": json.dumps({"rules": [{"route": "*", "status": 500}]})}
    first = make_app(tmp_path, **env).test_client()
    assert create(first).status_code == 500
    first.delete(FAULTS, headers=SK)
    second = make_app(tmp_path, **env).test_client()
    assert create(second).status_code == 201
    db.close_thread_connections()


@pytest.mark.parametrize(
    ("faults", "rate_limit", "variable"),
    [
        ("{not json", "", "MOCK_ISSUER_FAULTS"),
        ('{"rules": [{"route": "*", "status": 99}]}', "", "MOCK_ISSUER_FAULTS"),
        ('[{"route": "*", "status": 503}]', "", "MOCK_ISSUER_FAULTS"),  # not the PUT body
        ("", "lots", "MOCK_ISSUER_RATE_LIMIT"),
    ],
)
def test_bad_environment_settings_stop_the_start_naming_the_variable(
    tmp_path, faults, rate_limit, variable
):
    with pytest.raises(RuntimeError, match=variable):
        make_app(tmp_path, MOCK_ISSUER_FAULTS=faults, MOCK_ISSUER_RATE_LIMIT=rate_limit)
