"""Each machine's settings as an OAuth 2.0 client (ours, never on Clerk's machine object): the
access-token format the token endpoint issues it when the request names none.

A standard OAuth client (Authlib, the caller in `M2M_PROVIDER=oauth`) sends no `token_format`,
a parameter of ours, so without this setting it could only ever get JWTs. Stored in a small
table keyed by machine id and deleted with the machine (foreign key, ON DELETE CASCADE); a
machine without a row has the default, `jwt`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from . import db, machines
from .errors import invalid_param
from .oauth_tokens import DEFAULT_TOKEN_FORMAT, TOKEN_FORMATS

SCHEMA = """
CREATE TABLE IF NOT EXISTS oauth_clients (
    machine_id TEXT PRIMARY KEY REFERENCES machines (id) ON DELETE CASCADE,
    token_format TEXT NOT NULL
) WITHOUT ROWID
"""
FIELD = "token_format"


def init_storage(conn: sqlite3.Connection) -> None:
    """Create the table (race-safe: every worker runs it, before the seed may write to it)."""
    with db.write(conn):
        conn.execute(SCHEMA)


def validate_token_format(value: Any) -> str:
    """`jwt` or `opaque`, else the API's error for the `token_format` field."""
    if value not in TOKEN_FORMATS:
        raise invalid_param(FIELD, "must be jwt or opaque")
    return value


def token_format(conn: sqlite3.Connection, machine_id: str) -> str:
    """The format the token endpoint issues `machine_id` by default."""
    row = conn.execute(
        "SELECT token_format FROM oauth_clients WHERE machine_id = ?", (machine_id,)
    ).fetchone()
    return row[0] if row else DEFAULT_TOKEN_FORMAT


def store_token_format(conn: sqlite3.Connection, machine_id: str, value: str) -> None:
    """Write the setting inside the caller's write transaction (the seed's)."""
    conn.execute(
        "INSERT INTO oauth_clients (machine_id, token_format) VALUES (?, ?)"
        " ON CONFLICT (machine_id) DO UPDATE SET token_format = excluded.token_format",
        (machine_id, value),
    )


def set_token_format(conn: sqlite3.Connection, machine_id: str, value: Any) -> str:
    """Validate and store `machine_id`'s default format; an unknown machine is
    `machine_not_found` (checked under the write lock, so a concurrent delete cannot slip in)."""
    value = validate_token_format(value)
    with db.write(conn):
        machines.get_machine(conn, machine_id)
        store_token_format(conn, machine_id, value)
    return value
