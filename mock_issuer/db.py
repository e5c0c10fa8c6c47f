"""SQLite storage: one connection per thread and process, WAL mode, schema, write transactions.

Every gunicorn worker opens its own connections to the same file. Writes run inside
`BEGIN IMMEDIATE` so concurrent writers queue on SQLite's lock (bounded by busy_timeout)
instead of failing half-way; reads run in autocommit mode and see the last committed state.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import rollups
from .config import current_settings

BUSY_TIMEOUT_MS = 10_000

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS machines (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    default_token_ttl INTEGER NOT NULL,
    secret_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS machines_created_at ON machines (created_at);
-- Every key that authenticates a machine, hashed: the current one (expires_at NULL) and
-- earlier ones kept alive by previous_token_ttl after a rotation.
CREATE TABLE IF NOT EXISTS machine_keys (
    key_hash BLOB PRIMARY KEY,
    machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS machine_keys_machine ON machine_keys (machine_id);
CREATE TABLE IF NOT EXISTS scopes (
    from_machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    to_machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (from_machine_id, to_machine_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scopes_to ON scopes (to_machine_id);
-- Opaque tokens: only the SHA-256 of the token string is stored for lookup. `wrapped` (every
-- token since any may be reused; NULL in older rows) is the token encrypted under a key derived
-- from the minting machine's secret key AND the instance secret key (CLERK_SECRET_KEY, never
-- stored here), so a later create can hand the same token back to that machine.
CREATE TABLE IF NOT EXISTS m2m_tokens (
    id TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    subject TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    claims TEXT NOT NULL,
    scopes TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    revocation_reason TEXT,
    expiration INTEGER NOT NULL,
    last_used_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    wrapped BLOB
);
-- Token lists (tokens.list_tokens), newest first: a page reads its own rows, not the history.
-- Live tokens of a subject (the default list) and its count: (subject, revoked, ...).
DROP INDEX IF EXISTS m2m_tokens_subject;
CREATE INDEX IF NOT EXISTS m2m_tokens_subject_newest ON m2m_tokens (subject, created_at, id);
CREATE INDEX IF NOT EXISTS m2m_tokens_unrevoked_newest
    ON m2m_tokens (subject, revoked, created_at, id);
CREATE INDEX IF NOT EXISTS m2m_tokens_unrevoked_expiry ON m2m_tokens (subject, revoked, expiration);
-- The reuse lookup (min_remaining_ttl_seconds): equality on subject, claims and scopes, then a
-- range on expiration, over reusable live tokens only; without it the lookup read every token
-- the machine ever minted while holding the write lock.
CREATE INDEX IF NOT EXISTS m2m_tokens_reusable ON m2m_tokens (subject, claims, scopes, expiration)
    WHERE wrapped IS NOT NULL AND revoked = 0;
-- Retention (retention.py): expired tokens by expiry, revoked ones by revocation time.
CREATE INDEX IF NOT EXISTS m2m_tokens_expiration ON m2m_tokens (expiration);
CREATE INDEX IF NOT EXISTS m2m_tokens_revoked ON m2m_tokens (updated_at) WHERE revoked = 1;
-- JWT-format tokens are not stored as tokens; this bookkeeping row says which key signed
-- which token id until when (signing-key retention, and a clear 400 on revoke while the JWT
-- lives). Deleted once the JWT has expired (retention.py).
CREATE TABLE IF NOT EXISTS jwt_issued (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    kid TEXT NOT NULL,
    expiration INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jwt_issued_kid ON jwt_issued (kid, expiration);
CREATE INDEX IF NOT EXISTS jwt_issued_expiration ON jwt_issued (expiration);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS signing_keys_one_active
    ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;
-- The key that the next rotation will activate: published in the JWKS ahead of use, so
-- verifiers already hold it when it starts signing. Never signs while it sits here.
CREATE TABLE IF NOT EXISTS next_signing_key (
    kid TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    format TEXT NOT NULL,
    machine_id TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_events_ts ON usage_events (ts);
-- Who prunes (pruning.py): one process at a time holds the lease until `expires_at`.
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
"""
    + rollups.SCHEMA
)

_local = threading.local()


def now_ms() -> int:
    """Unix time in milliseconds, the unit of every timestamp on Clerk's wire."""
    return time.time_ns() // 1_000_000


def _open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def connect(path: str) -> sqlite3.Connection:
    """This thread's connection to `path`, opened once per thread and process (never shared
    across a fork)."""
    conns: dict | None = getattr(_local, "conns", None)
    if conns is None or getattr(_local, "pid", None) != os.getpid():
        conns = _local.conns = {}
        _local.pid = os.getpid()
    conn = conns.get(path)
    if conn is None:
        conn = conns[path] = _open(path)
    return conn


def close_thread_connections() -> None:
    """Close this thread's connections (tests that create many apps call it)."""
    for conn in getattr(_local, "conns", {}).values():
        conn.close()
    _local.conns = {}


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction: BEGIN IMMEDIATE takes the write lock up front, so a read-then-write
    sequence inside cannot be interleaved with another worker's write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_wal(path: str) -> sqlite3.Connection:
    """This thread's connection to `path` (created with its folder if missing), switched to
    WAL. Switching can fail fast while another process does the same: retry until the busy
    timeout."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return conn
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def init_db(path: str) -> None:
    """Create the database file, switch it to WAL and create the schema; safe to run from
    several processes at once."""
    conn = open_wal(path)
    # executescript commits any open transaction first, so the script carries its own BEGIN.
    try:
        conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def get_conn() -> sqlite3.Connection:
    """This thread's connection to the current app's database (for request handlers)."""
    return connect(current_settings().mock_issuer_db)
