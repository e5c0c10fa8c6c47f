"""Usage records and `GET /v1/usage`; seeding; configuration from `.env` (test client)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from mock_issuer import create_app, db, usage
from mock_issuer.config import ConfigError
from tests.issuer_calls import assert_clerk_error, bearer, mint, verify
from tests.seed import CALLER, OUTSIDER, SK, TEST_SECRET_KEY
from tests.seed import make_issuer_app as make_app

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(tmp_path) -> FlaskClient:
    yield make_app(tmp_path).test_client()
    db.close_thread_connections()


def test_usage_counts_creations_and_verifications_by_format_and_outcome(client):
    opaque = mint(client, min_remaining_ttl_seconds=5)  # a creation: nothing to reuse yet
    jwt_token = mint(client, token_format="jwt")
    mint(client, key=OUTSIDER.secret_key)
    assert verify(client, opaque["token"]).status_code == 200
    assert verify(client, opaque["token"]).status_code == 200
    assert verify(client, jwt_token["token"]).status_code == 200
    assert verify(client, "mt_unknown").status_code == 404
    assert verify(client, opaque["token"], key=OUTSIDER.secret_key).status_code == 404
    reuse_a = mint(client, min_remaining_ttl_seconds=5)
    reuse_b = mint(client, min_remaining_ttl_seconds=5)
    assert reuse_a["id"] == reuse_b["id"] == opaque["id"]  # a live token is handed back

    resp = client.get("/v1/usage?range=hour", headers=SK)
    assert resp.status_code == 200
    body = resp.json
    assert body["object"] == "usage" and body["range"] == "hour"
    assert body["bucket_seconds"] == 60 and len(body["buckets"]) == 60
    assert body["totals"] == {
        "creations": {"opaque": 2, "jwt": 1, "total": 3},
        "reuses": {"opaque": 2, "total": 2},
        "verifications": {
            "opaque": {"ok": 2, "failed": 2},
            "jwt": {"ok": 1, "failed": 0},
            "total": 5,
        },
    }
    assert sum(b["creations"]["total"] for b in body["buckets"]) == 3
    per_machine = {m["machine_id"]: m for m in body["machines"]}
    assert per_machine[CALLER.id]["creations"]["total"] == 2
    assert per_machine[CALLER.id]["verifications"]["opaque"] == {"ok": 2, "failed": 1}
    assert per_machine[OUTSIDER.id]["creations"]["opaque"] == 1
    assert per_machine[None]["verifications"]["opaque"]["failed"] == 1

    only = client.get(f"/v1/usage?range=day&machine_id={OUTSIDER.id}&bucket=600", headers=SK).json
    assert only["machine_id"] == OUTSIDER.id and only["bucket_seconds"] == 600
    assert len(only["buckets"]) == 144
    assert only["totals"]["creations"]["total"] == 1
    assert only["buckets"][-1]["start"] <= only["end"] < only["buckets"][-1]["end"]


def test_usage_parameter_errors(client):
    cases = [
        ("range=week", "range"),
        ("bucket=0", "bucket"),
        ("bucket=x", "bucket"),
        ("range=30d&bucket=60", "bucket"),
        ("range=day&bucket=90", "bucket"),  # whole minutes beyond the hour range
        ("machine_id=bad", "machine_id"),
    ]
    for query, param in cases:
        resp = client.get(f"/v1/usage?{query}", headers=SK)
        assert (
            assert_clerk_error(resp, 422, "form_param_value_invalid")["meta"]["param_name"] == param
        )
    assert_clerk_error(
        client.get("/v1/usage", headers=bearer(CALLER.secret_key)), 401, "clerk_key_invalid"
    )


def test_usage_report_buckets_are_aligned_and_cover_the_range(tmp_path):
    make_app(tmp_path)
    conn = db.connect(str(tmp_path / "issuer.db"))
    now = 10_000_000_000
    with db.write(conn):
        usage.record(conn, "create", "opaque", CALLER.id, ts=now - 3_500_000)
        usage.record(conn, "create", "opaque", CALLER.id, ts=now - 3_700_000)  # outside the hour
        usage.record(conn, "verify", "jwt", CALLER.id, "failed", ts=now)
    report = usage.usage_report(conn, "hour", now=now)
    assert all(b["start"] % 60_000 == 0 for b in report["buckets"])
    assert report["totals"]["creations"]["total"] == 1
    assert report["buckets"][-1]["verifications"]["jwt"]["failed"] == 1
    db.close_thread_connections()


# ---- seeding ----


def write_seed(path: Path, machines: list[dict]) -> str:
    path.write_text(json.dumps({"machines": machines}))
    return str(path)


def issuer_config(tmp_path: Path, seed: str) -> dict:
    return {
        "CLERK_SECRET_KEY": TEST_SECRET_KEY,
        "MOCK_ISSUER_DB": str(tmp_path / "issuer.db"),
        "MOCK_ISSUER_SEED": seed,
        "TESTING": True,
    }


def test_seed_is_idempotent_and_keeps_keys_rotated_since(tmp_path):
    seed = write_seed(
        tmp_path / "seed.json",
        [
            {"name": "by-name", "scoped_machines": ["fixed"]},
            {
                "id": "mch_fixedid000000000000000000000"[:31],
                "name": "fixed",
                "secret_key": "ak_fixed" + "9" * 24,
                "default_token_ttl": 60,
            },
        ],
    )
    client = create_app(issuer_config(tmp_path, seed)).test_client()
    listed = client.get("/v1/machines?order_by=name", headers=SK).json
    assert [m["name"] for m in listed["data"]] == ["by-name", "fixed"]
    by_name, fixed = listed["data"]
    assert fixed["id"] == "mch_fixedid00000000000000000000" and fixed["default_token_ttl"] == 60
    assert [m["id"] for m in by_name["scoped_machines"]] == [fixed["id"]]
    rotated = client.post(
        f"/v1/machines/{fixed['id']}/secret_key/rotate", json={"previous_token_ttl": 0}, headers=SK
    ).json["secret"]

    again = create_app(issuer_config(tmp_path, seed)).test_client()
    relisted = again.get("/v1/machines?order_by=name", headers=SK).json
    assert relisted["total_count"] == 2
    assert [m["id"] for m in relisted["data"]] == [by_name["id"], fixed["id"]]
    assert again.get(f"/v1/machines/{fixed['id']}/secret_key", headers=SK).json["secret"] == rotated
    db.close_thread_connections()


@pytest.mark.parametrize(
    "machines",
    [
        [{"id": "mch_short", "name": "x"}],
        [{"name": "x", "secret_key": "sk_wrong"}],
        [{"name": "x", "default_token_ttl": 0}],
        [{"name": "x", "scoped_machines": ["nobody"]}],
        [{"name": "x", "scoped_machines": ["x"]}],
        [{"id": "mch_" + "s" * 27, "name": "x", "scoped_machines": ["mch_" + "s" * 27]}],
        [{"name": "a", "secret_key": "ak_same"}, {"name": "b", "secret_key": "ak_same"}],
        [{"no_name": True}],
        [{"name": "x", "oauth_token_format": "paseto"}],
    ],
)
def test_bad_seed_fails_start_with_a_clear_error(tmp_path, machines):
    seed = write_seed(tmp_path / "seed.json", machines)
    with pytest.raises(ValueError, match=r"seed|secret key|scopes"):
        create_app(issuer_config(tmp_path, seed))
    db.close_thread_connections()


def test_missing_seed_file_fails_start(tmp_path):
    with pytest.raises(ValueError, match="cannot read seed file"):
        create_app(issuer_config(tmp_path, str(tmp_path / "absent.json")))


def test_missing_instance_key_fails_start(tmp_path, monkeypatch):
    monkeypatch.delenv("CLERK_SECRET_KEY", raising=False)
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")
    with pytest.raises(ConfigError, match="CLERK_SECRET_KEY"):
        create_app({"MOCK_ISSUER_DB": str(tmp_path / "x.db")})


def test_env_example_and_demo_seed_work_as_shipped(tmp_path, monkeypatch):
    """The .env.example values (loaded with python-dotenv) plus the demo seed give a working
    demo: the demo caller mints a token the demo receiver can verify."""
    from dotenv import dotenv_values

    values = dotenv_values(REPO / "mock_issuer" / ".env.example")
    for name, value in values.items():
        monkeypatch.setenv(name, value or "")
    monkeypatch.setenv("MOCK_ISSUER_DB", str(tmp_path / "demo.db"))
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")
    monkeypatch.chdir(tmp_path)  # the seed path must resolve from anywhere
    app = create_app()
    app.testing = True  # no background pruning thread under the test client
    assert app.extensions["settings"].mock_issuer_url == "http://127.0.0.1:8780"
    demo = json.loads((REPO / "mock_issuer" / "demo_seed.json").read_text())["machines"]
    caller, receiver = demo[0], demo[1]
    client = app.test_client()
    token = mint(client, key=caller["secret_key"])
    assert token["scopes"] == [receiver["id"]]
    assert verify(client, token["token"], key=receiver["secret_key"]).status_code == 200
    sk = {"Authorization": f"Bearer {values['CLERK_SECRET_KEY']}"}
    assert client.get("/v1/machines", headers=sk).json["total_count"] == 2
    db.close_thread_connections()


def test_settings_come_from_dotenv_then_environment_then_config_and_never_touch_os_environ(
    tmp_path, monkeypatch
):
    import mock_issuer

    (tmp_path / ".env").write_text(
        "MOCK_ISSUER_URL=http://127.0.0.1:9001\nMOCK_ISSUER_SEED=absent.json\n"
        "MOCK_ISSUER_RETENTION_DAYS=5\n"
    )
    monkeypatch.setattr(mock_issuer, "APP_DIR", tmp_path)
    for name in ("M2M_SKIP_DOTENV", "MOCK_ISSUER_URL", "MOCK_ISSUER_SEED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOCK_ISSUER_RETENTION_DAYS", "7")
    before = dict(os.environ)
    config = {**issuer_config(tmp_path, ""), "MOCK_ISSUER_SEED": ""}
    settings = create_app(config).extensions["settings"]
    assert settings.mock_issuer_url == "http://127.0.0.1:9001"  # from .env
    assert settings.mock_issuer_retention_days == 7  # the environment wins over .env
    assert settings.mock_issuer_seed == ""  # config wins over both
    assert dict(os.environ) == before
    monkeypatch.setenv("M2M_SKIP_DOTENV", "1")
    assert create_app(config).extensions["settings"].mock_issuer_url == "http://127.0.0.1:8780"
    db.close_thread_connections()
