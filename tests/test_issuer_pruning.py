"""Pruning runs off the request path: in a background thread per process, one process at a
time (a lease in the database), in bounded batches that keep what must be kept, stopping
cleanly; a token create never waits on it or fails because of it."""

from __future__ import annotations

import time

import pytest

from mock_issuer import db, ids, pruning, retention
from tests.issuer_calls import mint
from tests.seed import CALLER
from tests.seed import make_issuer_app as make_app

DAY_MS = 86_400_000
RETENTION_MS = 30 * DAY_MS


@pytest.fixture
def app(tmp_path):
    yield make_app(tmp_path)
    db.close_thread_connections()


def conn_of(app):
    return db.connect(app.extensions["settings"].mock_issuer_db)


def add_tokens(conn, n: int, *, expired_days_ago: float, revoked: bool = False) -> set[str]:
    """`n` opaque tokens of CALLER's that expired (or, revoked, were revoked) that long ago
    (negative: still live)."""
    now = db.now_ms()
    when = now - round(expired_days_ago * DAY_MS)
    rows = [
        (
            ids.new_token_id(),
            ids.secret_hash(ids.new_token_secret()),
            CALLER.id,
            when if not revoked else now + DAY_MS,
            int(revoked),
            when if revoked else now - DAY_MS,
        )
        for _ in range(n)
    ]
    with db.write(conn):
        conn.executemany(
            "INSERT INTO m2m_tokens (id, token_hash, subject, claims, scopes, expiration,"
            " revoked, created_at, updated_at) VALUES (?, ?, ?, 'null', '[]', ?, ?, ?, ?)",
            [(i, h, s, exp, rev, upd - DAY_MS, upd) for i, h, s, exp, rev, upd in rows],
        )
    return {row[0] for row in rows}


def token_ids(conn) -> set[str]:
    return {row[0] for row in conn.execute("SELECT id FROM m2m_tokens")}


def test_pruning_in_batches_keeps_what_must_be_kept(app, monkeypatch):
    conn = conn_of(app)
    old = add_tokens(conn, 23, expired_days_ago=31) | add_tokens(
        conn, 9, expired_days_ago=45, revoked=True
    )
    kept = (
        add_tokens(conn, 7, expired_days_ago=29)  # expired, still listable
        | add_tokens(conn, 5, expired_days_ago=-1)  # live
        | add_tokens(conn, 4, expired_days_ago=2, revoked=True)  # revoked recently
    )
    monkeypatch.setattr(retention, "BATCH", 4)
    pauses = []
    deleted = retention.prune(
        conn, retention_ms=RETENTION_MS, between_batches=lambda: not pauses.append(1)
    )
    assert deleted["m2m_tokens"] == len(old) == 32
    assert token_ids(conn) >= kept and not token_ids(conn) & old
    assert len(pauses) >= 32 // 4 - 1  # a pause after every full batch


def test_stopping_between_batches_keeps_the_batches_done(app, monkeypatch):
    conn = conn_of(app)
    old = add_tokens(conn, 10, expired_days_ago=31)
    monkeypatch.setattr(retention, "BATCH", 4)
    with pytest.raises(retention.Stopped):
        retention.prune(conn, retention_ms=RETENTION_MS, between_batches=lambda: False)
    assert len(old - token_ids(conn)) == 4  # the one committed batch, no more


def test_a_create_never_prunes_nor_fails_because_pruning_is_due(app, monkeypatch):
    conn = conn_of(app)
    backlog = add_tokens(conn, 50, expired_days_ago=31)

    def broken_prune(*args, **kwargs):
        raise RuntimeError("pruning failed")

    monkeypatch.setattr(retention, "prune", broken_prune)
    client = app.test_client()
    for _ in range(3):
        assert (
            client.post(
                "/v1/m2m_tokens", headers={"Authorization": f"Bearer {CALLER.secret_key}"}
            ).status_code
            == 201
        )
    assert backlog <= token_ids(conn)  # the request path left the backlog alone
    with pytest.raises(RuntimeError):
        app.extensions["pruner"].run_once()  # the background round is where it would fail


def test_one_process_prunes_at_a_time_and_again_after_the_interval(app, monkeypatch):
    path = app.extensions["settings"].mock_issuer_db
    first, second = (pruning.Pruner(path, RETENTION_MS, interval_seconds=60) for _ in range(2))
    backlog = add_tokens(conn_of(app), 3, expired_days_ago=31)
    assert first.run_once() is not None and not backlog & token_ids(conn_of(app))
    assert second.run_once() is None  # the lease is the first one's for a minute
    assert first.take_lease()  # its holder may take it again
    real_now = db.now_ms
    monkeypatch.setattr(db, "now_ms", lambda: real_now() + 61_000)
    assert second.run_once() == {
        "jwt_issued": 0,
        "m2m_tokens": 0,
        "usage_events": 0,
        "usage_rollups": 0,
    }


def test_the_background_thread_prunes_a_backlog_and_stops_cleanly(app, monkeypatch):
    conn = conn_of(app)
    backlog = add_tokens(conn, 30, expired_days_ago=31)
    monkeypatch.setattr(retention, "BATCH", 7)
    pruner = pruning.Pruner(
        app.extensions["settings"].mock_issuer_db, RETENTION_MS, interval_seconds=0.05
    )
    pruner.start()
    thread = pruner._thread
    deadline = time.monotonic() + 10
    while backlog & token_ids(conn) and time.monotonic() < deadline:
        time.sleep(0.02)
    pruner.stop()
    assert not backlog & token_ids(conn)
    assert thread is not None and not thread.is_alive()


def test_the_test_client_starts_no_thread_unless_asked(app, tmp_path):
    client = app.test_client()
    mint(client)
    assert app.extensions["pruner"]._thread is None
    served = make_app(tmp_path / "served", TESTING=False)  # as under a real server
    served.test_client().get("/healthz")
    pruner = served.extensions["pruner"]
    assert pruner._thread is not None and pruner._thread.is_alive()
    pruner.stop()
    assert pruner._thread is None
