"""Retention: pruning of expired JWT bookkeeping, old tokens and old usage records (test client;
the issuer's clock is moved instead of sleeping). When and where it runs: test_issuer_pruning."""

from __future__ import annotations

import sqlite3

import pytest

from mock_issuer import create_app, db, retention, usage
from mock_issuer.config import ConfigError, load_settings
from mock_issuer.usage import all_time_counts, counts_since
from tests.fakes import advance_clock
from tests.issuer_calls import assert_clerk_error, mint, verify
from tests.seed import CALLER, RECEIVER, SK, TEST_SECRET_KEY
from tests.seed import make_issuer_app as make_app

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield make_app(tmp_path_factory.mktemp("retention"))
    db.close_thread_connections()


def conn_of(app) -> sqlite3.Connection:
    return db.connect(app.extensions["settings"].mock_issuer_db)


def ids_in(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}  # noqa: S608


def test_prune_keeps_tokens_for_the_retention_period_and_jwt_rows_only_while_live(app):
    client = app.test_client()
    conn = conn_of(app)
    live = mint(client, seconds_until_expiration=3600)["id"]
    short = mint(client, seconds_until_expiration=1)["id"]
    revoked = mint(client, seconds_until_expiration=3600 * 24 * 365)["id"]
    assert client.post(f"/v1/m2m_tokens/{revoked}/revoke", headers=SK).status_code == 200
    live_jwt = mint(client, token_format="jwt", seconds_until_expiration=3600)["id"]
    short_jwt = mint(client, token_format="jwt", seconds_until_expiration=1)["id"]
    assert {live_jwt, short_jwt} <= ids_in(conn, "jwt_issued")
    now = db.now_ms()

    deleted = retention.prune(conn, retention_ms=30 * DAY_MS, now=now + 5_000)
    jwt_rows = ids_in(conn, "jwt_issued")
    assert live_jwt in jwt_rows and short_jwt not in jwt_rows  # expired JWT rows go at once
    assert {short, revoked, live} <= ids_in(conn, "m2m_tokens")  # tokens stay listable
    assert deleted["jwt_issued"] >= 1 and deleted["m2m_tokens"] == 0

    retention.prune(conn, retention_ms=30 * DAY_MS, now=now + 31 * DAY_MS)
    remaining = ids_in(conn, "m2m_tokens")
    assert short not in remaining and revoked not in remaining  # 30 days after expiry/revoke
    assert live not in remaining  # it expired after an hour, so it too is 30 days past


def test_usage_figures_are_kept_at_least_32_days_and_raw_records_an_hour(tmp_path):
    app = make_app(tmp_path)  # its own database: this test empties the usage tables
    conn = conn_of(app)
    now = db.now_ms()
    with db.write(conn):
        for age_ms in (40 * DAY_MS, 33 * DAY_MS, 31 * DAY_MS, DAY_MS, 3 * HOUR_MS, 10_000):
            usage.record(conn, "create", "opaque", CALLER.id, ts=now - age_ms)
    before = usage.usage_report(conn, "30d", now=now)
    deleted = retention.prune(conn, retention_ms=DAY_MS, now=now)  # a short token retention...
    ages = [(now - ts) // 1000 for (ts,) in conn.execute("SELECT ts FROM usage_events")]
    assert ages == [10]  # raw records go after an hour
    assert usage.usage_report(conn, "30d", now=now) == before  # ...figures stay for the 30 days
    assert before["totals"]["creations"]["total"] == 3  # 1 day, 3 hours and 10 s old
    assert counts_since(conn, now - 32 * DAY_MS)[("create", "opaque", "ok")] == 4  # ...the month
    assert deleted["usage_events"] == 5 and deleted["usage_rollups"] > 0
    oldest = dict(conn.execute("SELECT size, MIN(start) FROM usage_rollups GROUP BY size"))
    assert now - oldest[1000] < 2 * HOUR_MS  # seconds: two hours
    assert 31 * DAY_MS < now - oldest[60_000] < 32 * DAY_MS  # minutes and hours: 32 days
    assert 31 * DAY_MS < now - oldest[HOUR_MS] < 32 * DAY_MS

    retention.prune(conn, retention_ms=DAY_MS, now=now + 400 * DAY_MS)
    assert conn.execute("SELECT COUNT(*) FROM usage_rollups").fetchone()[0] == 0
    assert all_time_counts(conn)[("create", "opaque", "ok")] == 6  # /metrics never goes back
    db.close_thread_connections()


def test_an_expired_jwt_answers_revoke_with_404_before_and_after_pruning(app, monkeypatch):
    client = app.test_client()
    token = mint(client, token_format="jwt", seconds_until_expiration=1)
    live = client.post(f"/v1/m2m_tokens/{token['id']}/revoke", headers=SK)
    assert_clerk_error(live, 400, "jwt_token_not_revocable")
    advance_clock(monkeypatch, 2)
    before = client.post(f"/v1/m2m_tokens/{token['id']}/revoke", headers=SK)
    assert_clerk_error(before, 404, "resource_not_found")
    retention.prune(conn_of(app), retention_ms=DAY_MS)
    after = client.post(f"/v1/m2m_tokens/{token['id']}/revoke", headers=SK)
    assert_clerk_error(after, 404, "resource_not_found")


def test_pruning_does_not_touch_live_tokens(app, monkeypatch):
    client = app.test_client()
    token = mint(client, seconds_until_expiration=3600, min_remaining_ttl_seconds=60)
    advance_clock(monkeypatch, 120)
    retention.prune(conn_of(app), retention_ms=2_000)
    assert mint(client, min_remaining_ttl_seconds=60)["id"] == token["id"]  # still reusable
    assert verify(client, token["token"], key=RECEIVER.secret_key).status_code == 200


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_bad_retention_setting_fails_start_naming_the_variable(tmp_path, value):
    config = {
        "CLERK_SECRET_KEY": TEST_SECRET_KEY,
        "MOCK_ISSUER_DB": str(tmp_path / "issuer.db"),
        "MOCK_ISSUER_RETENTION_DAYS": value,
    }
    with pytest.raises(ConfigError, match="MOCK_ISSUER_RETENTION_DAYS"):
        create_app(config)
    assert not (tmp_path / "issuer.db").exists()  # refused before touching storage


def test_retention_is_30_days_unless_set(app):
    assert app.extensions["settings"].mock_issuer_retention_days == 30
    env = {"CLERK_SECRET_KEY": TEST_SECRET_KEY, "MOCK_ISSUER_RETENTION_DAYS": "7.5"}
    assert load_settings(env).mock_issuer_retention_days == 7.5
