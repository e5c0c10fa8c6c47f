"""Second hardening pass on the issuer (issue 13): inputs an attacker controls never grow
what the issuer stores without bound, nor leave anything stored that later reads fail on."""

from __future__ import annotations

import re

import pytest

from mock_issuer import db
from tests.conftest import make_issuer_app

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
