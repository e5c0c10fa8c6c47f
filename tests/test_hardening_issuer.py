"""Second hardening pass on the issuer (issue 13): inputs an attacker controls never grow
what the issuer stores without bound, nor leave anything stored that later reads fail on."""

from __future__ import annotations

import re

import pytest

from mock_issuer import db, tokens
from tests.seed import CALLER, TEST_SECRET_KEY, make_issuer_app

LATENCY_SERIES = re.compile(r"^mock_issuer_request_duration_seconds_count\{([^}]*)\}", re.M)


@pytest.fixture
def app(tmp_path):
    return make_issuer_app(tmp_path)


@pytest.fixture
def anon(app):
    return app.test_client()


def latency_label_values(anon, label: str) -> set[str]:
    """Every value `label` takes in the request-latency histogram."""
    text = anon.get("/metrics").text
    value = re.compile(rf'{label}="([^"]*)"')
    return {value.search(labels).group(1) for labels in LATENCY_SERIES.findall(text)}


def test_made_up_methods_fold_into_one_metrics_label_value(anon, app):
    for i in range(40):
        anon.open("/v1/machines", method=f"JUNK{i}")
        anon.open(f"/no/such/path/{i}", method=f"X{i}")
    methods = latency_label_values(anon, "method")
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in methods
    rows = (
        db.connect(app.extensions["metrics_db"])
        .execute("SELECT COUNT(DISTINCT method) FROM request_latency")
        .fetchone()[0]
    )
    assert rows <= 8  # stored series stay bounded too, not only the exported ones


def test_unmatched_paths_fold_into_one_route_label_value(anon):
    for i in range(20):
        anon.get(f"/v1/nothing-here-{i}")
    routes = latency_label_values(anon, "route")
    assert "unmatched" in routes
    assert not any("nothing-here" in route for route in routes)


# ---- claims nesting ----

AK = {"Authorization": f"Bearer {CALLER.secret_key}"}
SK = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}


def nested(depth: int, as_list: bool) -> object:
    """A JSON value `depth` containers deep: [[...[1]...]] or {"a": {"a": ... 1}}."""
    value: object = 1
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


@pytest.mark.parametrize("as_list", [False, True], ids=["objects", "lists"])
@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_claims_deeper_than_the_limit_are_refused_before_anything_is_stored(
    anon, app, token_format, as_list
):
    if token_format == "jwt" and as_list:
        claims = {"a": nested(tokens.MAX_CLAIMS_DEPTH, as_list=True)}  # JWT claims: an object
    else:
        claims = nested(tokens.MAX_CLAIMS_DEPTH + 1, as_list)
    conn = db.connect(app.extensions["settings"].mock_issuer_db)
    before = conn.execute("SELECT COUNT(*) FROM m2m_tokens").fetchone()[0]
    resp = anon.post(
        "/v1/m2m_tokens", json={"token_format": token_format, "claims": claims}, headers=AK
    )
    assert resp.status_code == 422, resp.text
    assert resp.json["errors"][0]["meta"]["param_name"] == "claims"
    assert conn.execute("SELECT COUNT(*) FROM m2m_tokens").fetchone()[0] == before
    listed = anon.get(f"/v1/m2m_tokens?subject={CALLER.id}", headers=AK)
    assert listed.status_code == 200


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_claims_at_the_depth_limit_read_back_everywhere(anon, token_format):
    claims = {"a": nested(tokens.MAX_CLAIMS_DEPTH - 1, as_list=True)}
    created = anon.post(
        "/v1/m2m_tokens", json={"token_format": token_format, "claims": claims}, headers=AK
    )
    assert created.status_code == 201, created.text
    assert created.json["claims"] == claims
    verified = anon.post("/m2m_tokens/verify", json={"token": created.json["token"]}, headers=SK)
    assert verified.status_code == 200 and verified.json["claims"] == claims
    if token_format == "opaque":
        listed = anon.get(f"/v1/m2m_tokens?subject={CALLER.id}", headers=AK)
        assert listed.status_code == 200
        assert listed.json["m2m_tokens"][0]["claims"] == claims
