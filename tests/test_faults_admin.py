"""Fault injection and rate-limit emulation through Flask's test client: the admin route, rule
matching, deterministic shares, count limits, Retry-After, hangs, the environment settings."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mock_issuer import db
from mock_issuer.faults import FaultConfig, FaultRule, FaultSpecError, RateLimit, normalize_path
from tests.conftest import CALLER, RECEIVER, TEST_SECRET_KEY, make_issuer_app

SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
AK = {"Authorization": f"Bearer {CALLER.secret_key}"}
FAULTS = "/v1/_faults"


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


def put(client: FlaskClient, *rules: dict, **settings) -> dict:
    resp = client.put(FAULTS, json={"rules": list(rules), **settings}, headers=SK)
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


def test_faults_are_off_by_default_and_nothing_is_counted(client):
    assert create(client).status_code == 201
    state = client.get(FAULTS, headers=SK).json
    assert state["object"] == "fault_config"
    assert state["active"] is False
    assert state["rules"] == [] and state["rate_limit"] is None
    assert state["request_counts"] == {}


def test_admin_route_requires_the_instance_key(client):
    assert_envelope(client.get(FAULTS), 401, "authorization_header_format_invalid")
    assert_envelope(client.put(FAULTS, json={}, headers=AK), 401, "clerk_key_invalid")
    bad_sk = {"Authorization": "Bearer sk_test_wrong"}
    assert_envelope(client.delete(FAULTS, headers=bad_sk), 401, "clerk_key_invalid")


@pytest.mark.parametrize(
    ("rule", "param"),
    [
        ({"status": 200}, "status"),
        ({"status": 600}, "status"),
        ({"status": "503"}, "status"),
        ({"status": 503, "share": 0}, "share"),
        ({"status": 503, "share": 1.5}, "share"),
        ({"status": 503, "share": True}, "share"),
        ({"status": 503, "count": 0}, "count"),
        ({"latency_ms": 60_001}, "latency_ms"),
        ({"hang_seconds": 61}, "hang_seconds"),
        ({"hang_seconds": 0}, "hang_seconds"),
        ({"status": 503, "retry_after": -1}, "retry_after"),
        ({"status": 503, "retry_after": "1"}, "retry_after"),
        ({"route": "POST", "status": 503}, "route"),
        ({"route": "POST m2m_tokens", "status": 503}, "route"),
        ({"route": "BAD-METHOD /x", "status": 503}, "route"),
        ({"route": "POST /m2m_tokens"}, "status"),  # a rule that does nothing
    ],
)
def test_invalid_rules_are_422_naming_the_field(client, rule, param):
    error = assert_envelope(
        client.put(FAULTS, json={"rules": [rule]}, headers=SK), 422, "form_param_value_invalid"
    )
    assert error["meta"]["param_name"] == param


def test_unknown_fields_and_bad_settings_are_rejected(client):
    resp = client.put(FAULTS, json={"rules": [{"status": 503, "sttaus": 1}]}, headers=SK)
    assert assert_envelope(resp, 400, "request_body_invalid")["meta"]["param_name"] == "sttaus"
    resp = client.put(FAULTS, json={"rulez": []}, headers=SK)
    assert_envelope(resp, 400, "request_body_invalid")
    resp = client.put(FAULTS, json={"rate_limit": "fast"}, headers=SK)
    assert assert_envelope(resp, 422, "form_param_value_invalid")["meta"]["param_name"] == (
        "rate_limit"
    )
    assert client.get(FAULTS, headers=SK).json["active"] is False


@pytest.mark.parametrize("rules", [{}, 0, False, ""])
def test_rules_that_are_not_a_list_are_422_not_taken_as_none(client, rules):
    resp = client.put(FAULTS, json={"rules": rules}, headers=SK)
    assert assert_envelope(resp, 422, "form_param_value_invalid")["meta"]["param_name"] == "rules"


def test_null_settings_mean_their_defaults_and_retry_after_0_is_kept(client):
    put(client, {"route": None, "status": 503, "share": None, "retry_after": 0},
        rate_limit=None, count_requests=None)  # fmt: skip
    resp = client.get("/v1/machines", headers=SK)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "0"


# ---- what a faulted answer looks like ----


@pytest.mark.parametrize(
    ("status", "code", "retry_after"),
    [(429, "too_many_requests", "7"), (503, "service_unavailable", "7"),
     (500, "internal_clerk_error", None), (502, "bad_gateway", None),
     (504, "gateway_timeout", None), (418, "injected_fault", None)],
)  # fmt: skip
def test_faulted_answers_use_the_envelope_and_429_503_say_when_to_retry(
    client, status, code, retry_after
):
    put(client, {"route": "POST /m2m_tokens", "status": status, "retry_after": 7})
    resp = create(client)
    error = assert_envelope(resp, status, code)
    assert "fault rule" in error["long_message"]
    assert resp.headers.get("Retry-After") == retry_after


# ---- which requests a rule hits ----


def test_a_route_matches_with_and_without_the_v1_prefix(client):
    put(client, {"route": "POST /m2m_tokens", "status": 503})
    assert create(client, "/v1/m2m_tokens").status_code == 503
    assert create(client, "/m2m_tokens").status_code == 503
    assert machine(client).status_code == 200
    put(client, {"route": "POST /v1/m2m_tokens/verify", "status": 500})
    for path in ("/m2m_tokens/verify", "/v1/m2m_tokens/verify"):
        assert client.post(path, json={"token": "mt_x"}, headers=SK).status_code == 500
    assert create(client).status_code == 201


def test_wildcards_match_one_segment_and_methods_are_exact(client):
    put(client, {"route": "GET /v1/machines/*", "status": 503})
    assert machine(client).status_code == 503
    assert client.get(f"/v1/machines/{CALLER.id}/secret_key", headers=SK).status_code == 200
    assert client.get("/v1/machines", headers=SK).status_code == 200
    assert client.patch(f"/v1/machines/{CALLER.id}", json={}, headers=SK).status_code == 200
    put(client, {"route": "* /v1/machines/**", "status": 503})
    assert client.get(f"/v1/machines/{CALLER.id}/secret_key", headers=SK).status_code == 503


def test_star_faults_every_api_route_but_never_healthz_or_the_admin_route(client):
    put(client, {"route": "*", "status": 500})
    assert create(client).status_code == 500
    assert client.get("/.well-known/jwks.json").status_code == 500
    assert client.get("/v1/jwks", headers=SK).status_code == 500
    assert client.get("/healthz").status_code == 200
    assert client.get(FAULTS, headers=SK).status_code == 200


def test_share_is_deterministic_exactly_floor_n_times_share_of_n(client):
    put(client, {"route": "GET /v1/machines/*", "status": 503, "share": 0.25})
    statuses = [machine(client).status_code for _ in range(8)]
    assert statuses == [200, 200, 200, 503, 200, 200, 200, 503]
    put(client, {"route": "GET /v1/machines/*", "status": 503, "share": 2 / 3})
    statuses = [machine(client).status_code for _ in range(6)]
    assert statuses.count(503) == 4 and statuses[:3].count(503) == 2


def test_count_limits_the_faults_then_requests_pass_and_the_counters_say_so(client):
    put(client, {"route": "POST /m2m_tokens", "status": 503, "count": 3})
    assert [create(client).status_code for _ in range(5)] == [503, 503, 503, 201, 201]
    rule = client.get(FAULTS, headers=SK).json["rules"][0]
    assert (rule["matched"], rule["faulted"], rule["remaining"]) == (3, 3, 0)


def test_the_first_live_matching_rule_decides_and_spent_rules_are_skipped(client):
    put(
        client,
        {"route": "POST /m2m_tokens", "status": 429, "count": 1},
        {"route": "*", "status": 500, "count": 1},
    )
    assert create(client).status_code == 429
    assert create(client).status_code == 500
    assert create(client).status_code == 201


def test_adding_a_rule_keeps_the_others_and_their_counters(client):
    put(client, {"route": "POST /m2m_tokens", "status": 503, "count": 1})
    assert create(client).status_code == 503
    resp = client.post(f"{FAULTS}/rules", json={"route": "GET /v1/machines/*", "status": 500},
                       headers=SK)  # fmt: skip
    assert resp.status_code == 200
    assert [r["faulted"] for r in resp.json["rules"]] == [1, 0]
    assert machine(client).status_code == 500
    assert create(client).status_code == 201


def test_requests_are_counted_per_route_with_the_v1_prefix_folded_in(client):
    put(client, count_requests=True)
    create(client, "/v1/m2m_tokens")
    create(client, "/m2m_tokens")
    client.post("/m2m_tokens/mt_" + "0" * 32 + "/revoke", json={}, headers=SK)
    client.get("/healthz")
    client.get(FAULTS, headers=SK)
    counts = client.get(FAULTS, headers=SK).json["request_counts"]
    assert counts == {"POST /m2m_tokens": 2, "POST /m2m_tokens/<token_id>/revoke": 1}


# ---- latency and hangs ----


def test_latency_delays_the_answer_then_it_is_served_normally(client):
    put(client, {"route": "POST /m2m_tokens", "latency_ms": 300})
    started = time.monotonic()
    assert create(client).status_code == 201
    assert time.monotonic() - started >= 0.3


def test_a_hang_ends_at_once_when_the_faults_are_cleared(app, client):
    put(client, {"route": "POST /m2m_tokens", "hang_seconds": 30})
    answers: list[int] = []
    worker = threading.Thread(target=lambda: answers.append(create(app.test_client()).status_code))
    worker.start()
    deadline = time.monotonic() + 10
    while client.get(FAULTS, headers=SK).json["rules"][0]["matched"] < 1:  # now hanging
        assert time.monotonic() < deadline, "the request never reached the hang rule"
        time.sleep(0.01)
    assert worker.is_alive()
    client.delete(FAULTS, headers=SK)
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert answers == [201]  # the request then went on unfaulted


def test_a_hang_that_runs_its_course_answers_504(client):
    put(client, {"route": "POST /m2m_tokens", "hang_seconds": 0.2})
    assert_envelope(create(client), 504, "gateway_timeout")


@pytest.mark.parametrize("status", [429, 503])
def test_a_hang_ending_in_429_or_503_sends_the_rules_own_retry_after(client, status):
    put(client, {"route": "POST /m2m_tokens", "hang_seconds": 0.1, "status": status,
                 "retry_after": 7})  # fmt: skip
    resp = create(client)
    assert resp.status_code == status
    assert resp.headers["Retry-After"] == "7"


# ---- rate limit ----


def test_rate_limit_answers_429_with_retry_after_once_the_window_is_used_up(client):
    put(client, rate_limit="3/600s")
    statuses = [machine(client).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    resp = create(client)
    error = assert_envelope(resp, 429, "too_many_requests")
    assert "rate limit of 3 requests per 600 s" in error["long_message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 600
    assert client.get("/healthz").status_code == 200  # never limited
    assert client.get(FAULTS, headers=SK).status_code == 200


def test_rate_limit_presets_are_clerks_limits():
    assert RateLimit.parse("development") == RateLimit(100, 10, "development")
    assert RateLimit.parse("production") == RateLimit(1000, 10, "production")
    assert RateLimit.parse(" 20 / 5s ") == RateLimit(20, 5, "20/5s")
    assert RateLimit.parse("off") is None and RateLimit.parse("") is None
    for bad in ("0/10s", "10/0s", "10/s", "ten/10s", "10/10m"):
        with pytest.raises(FaultSpecError):
            RateLimit.parse(bad)


def test_paths_are_normalized_without_v1_and_trailing_slash():
    assert normalize_path("/v1/m2m_tokens/verify/") == "/m2m_tokens/verify"
    assert normalize_path("/v1") == "/"
    assert normalize_path("/v10/x") == "/v10/x"
    assert FaultRule.from_dict({"route": "post   /x", "status": 500}).route == "post /x"


# ---- the environment ----


def test_environment_faults_apply_at_start_and_are_logged_without_keys(tmp_path, caplog):
    rules = [{"route": "POST /m2m_tokens", "status": 503, "count": 1}]
    with caplog.at_level(logging.INFO, logger="mock_issuer"):
        app = make_app(tmp_path, MOCK_ISSUER_FAULTS=json.dumps(rules),
                       MOCK_ISSUER_RATE_LIMIT="development")  # fmt: skip
    client = app.test_client()
    state = client.get(FAULTS, headers=SK).json
    assert state["rules"][0]["route"] == "POST /m2m_tokens"
    assert state["rate_limit"] == {"limit": 100, "window_seconds": 10, "name": "development"}
    assert create(client).status_code == 503
    assert create(client).status_code == 201
    on = [r.getMessage() for r in caplog.records if "from the environment" in r.getMessage()]
    assert len(on) == 1 and "POST /m2m_tokens -> 503" in on[0]
    assert TEST_SECRET_KEY not in caplog.text and CALLER.secret_key not in caplog.text
    db.close_thread_connections()


def test_environment_faults_apply_once_per_server_start_not_per_app(tmp_path):
    """A second app on the same database in the same server (as a gunicorn worker replaced
    after a crash) keeps what was set at run time instead of re-applying the environment."""
    env = {"MOCK_ISSUER_FAULTS": json.dumps([{"route": "*", "status": 500}])}
    first = make_app(tmp_path, **env).test_client()
    assert create(first).status_code == 500
    first.delete(FAULTS, headers=SK)
    second = make_app(tmp_path, **env).test_client()
    assert create(second).status_code == 201
    db.close_thread_connections()


@pytest.mark.parametrize(
    ("faults", "rate_limit", "variable"),
    [("{not json", "", "MOCK_ISSUER_FAULTS"), ('[{"status": 99}]', "", "MOCK_ISSUER_FAULTS"),
     ("", "lots", "MOCK_ISSUER_RATE_LIMIT")],
)  # fmt: skip
def test_bad_environment_settings_stop_the_start_naming_the_variable(
    tmp_path, faults, rate_limit, variable
):
    with pytest.raises(RuntimeError, match=variable):
        make_app(tmp_path, MOCK_ISSUER_FAULTS=faults, MOCK_ISSUER_RATE_LIMIT=rate_limit)


def test_environment_accepts_the_admin_routes_object_too():
    config = FaultConfig.from_dict(
        {"rules": [{"status": 503}], "rate_limit": "5/1s", "count_requests": True}
    )
    assert config.rules[0].status == 503 and config.rate_limit == RateLimit(5, 1, "5/1s")
    assert "RECEIVER" not in config.describe() and RECEIVER.id not in config.describe()
