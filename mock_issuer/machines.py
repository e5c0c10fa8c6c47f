"""Machines, their secret keys and their scopes (directed edges "A may send to B")."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from . import db, ids
from .errors import ClerkError, invalid_param, machine_not_found, not_found
from .requests_util import as_int, as_str

DEFAULT_TOKEN_TTL = 3600
MAX_TOKEN_TTL = 315_360_000
MAX_PREVIOUS_TOKEN_TTL = 28_800
MAX_SCOPES = 150

ORDER_BY = {
    "created_at": "created_at ASC, id ASC",
    "+created_at": "created_at ASC, id ASC",
    "-created_at": "created_at DESC, id DESC",
    "name": "name ASC, id ASC",
    "+name": "name ASC, id ASC",
    "-name": "name DESC, id DESC",
}


def validate_name(value: Any) -> str:
    """A machine name (API and dashboard): 1 to 256 characters, not only whitespace."""
    name = as_str("name", value, max_len=256)
    if not name.strip():
        raise invalid_param("name", "must not be blank")
    return name


def validate_default_token_ttl(value: Any) -> int:
    """A machine's default token lifetime in seconds (API and dashboard)."""
    return as_int("default_token_ttl", value, 1, MAX_TOKEN_TTL)


@dataclass
class Machine:
    id: str
    name: str
    instance_id: str
    default_token_ttl: int
    created_at: int
    updated_at: int
    scoped_machines: list[Machine] = field(default_factory=list)

    def to_dict(self, *, with_scopes: bool = True) -> dict[str, Any]:
        """Clerk's Machine object (scoped machines come without their own scoped_machines)."""
        obj: dict[str, Any] = {
            "object": "machine",
            "id": self.id,
            "name": self.name,
            "instance_id": self.instance_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "default_token_ttl": self.default_token_ttl,
        }
        if with_scopes:
            obj["scoped_machines"] = [m.to_dict(with_scopes=False) for m in self.scoped_machines]
        return obj


@dataclass
class Scope:
    from_machine_id: str
    to_machine_id: str
    created_at: int

    def to_dict(self, *, deleted: bool = False) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "object": "machine_scope",
            "from_machine_id": self.from_machine_id,
            "to_machine_id": self.to_machine_id,
        }
        if deleted:
            obj["deleted"] = True
        else:
            obj["created_at"] = self.created_at
        return obj


_instance_ids: dict[str, str] = {}


def instance_id(conn: sqlite3.Connection) -> str:
    """This issuer's `ins_` id, created once (race-safe) and cached per process."""
    path = conn.execute("PRAGMA database_list").fetchone()["file"]
    cached = _instance_ids.get(path)
    if cached:
        return cached
    insert = "INSERT OR IGNORE INTO meta (key, value) VALUES ('instance_id', ?)"
    if conn.in_transaction:
        conn.execute(insert, (ids.new_instance_id(),))
    else:
        with db.write(conn):
            conn.execute(insert, (ids.new_instance_id(),))
    value = conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()[0]
    _instance_ids[path] = value
    return value


def _row_to_machine(conn: sqlite3.Connection, row: sqlite3.Row) -> Machine:
    return Machine(
        id=row["id"],
        name=row["name"],
        instance_id=instance_id(conn),
        default_token_ttl=row["default_token_ttl"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _with_scopes(conn: sqlite3.Connection, machine: Machine) -> Machine:
    rows = conn.execute(
        "SELECT m.* FROM scopes s JOIN machines m ON m.id = s.to_machine_id"
        " WHERE s.from_machine_id = ? ORDER BY s.created_at, m.id",
        (machine.id,),
    ).fetchall()
    machine.scoped_machines = [_row_to_machine(conn, r) for r in rows]
    return machine


def scoped_ids(conn: sqlite3.Connection, machine_id: str) -> list[str]:
    """Ids of the machines `machine_id` may send to, sorted (the token's scope snapshot)."""
    rows = conn.execute(
        "SELECT to_machine_id FROM scopes WHERE from_machine_id = ? ORDER BY to_machine_id",
        (machine_id,),
    ).fetchall()
    return [r[0] for r in rows]


def get_machine(conn: sqlite3.Connection, machine_id: str) -> Machine:
    if not ids.is_machine_id(machine_id):
        raise machine_not_found(machine_id)
    row = conn.execute("SELECT * FROM machines WHERE id = ?", (machine_id,)).fetchone()
    if row is None:
        raise machine_not_found(machine_id)
    return _with_scopes(conn, _row_to_machine(conn, row))


def machine_exists(conn: sqlite3.Connection, machine_id: str) -> bool:
    return conn.execute("SELECT 1 FROM machines WHERE id = ?", (machine_id,)).fetchone() is not None


def list_machines(
    conn: sqlite3.Connection,
    *,
    limit: int = 10,
    offset: int = 0,
    query: str | None = None,
    order_by: str = "-created_at",
) -> tuple[list[Machine], int]:
    """A page of machines (name or id containing `query`) and the total count."""
    if order_by not in ORDER_BY:
        raise invalid_param("order_by", f"must be one of {', '.join(sorted(ORDER_BY))}")
    where, params = "", []
    if query:
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = " WHERE name LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\'"
        params = [pattern, pattern]
    total = conn.execute(f"SELECT COUNT(*) FROM machines{where}", params).fetchone()[0]  # noqa: S608
    rows = conn.execute(
        f"SELECT * FROM machines{where} ORDER BY {ORDER_BY[order_by]} LIMIT ? OFFSET ?",  # noqa: S608
        [*params, limit, offset],
    ).fetchall()
    return [_with_scopes(conn, _row_to_machine(conn, r)) for r in rows], total


def insert_machine(
    conn: sqlite3.Connection,
    machine_id: str,
    name: str,
    secret_key: str,
    default_token_ttl: int,
    now: int,
) -> None:
    """Insert a machine and its current key; call inside a write transaction. The one insert
    path, shared by `create_machine` and seeding (which creates many in one transaction)."""
    if machine_exists(conn, machine_id):
        raise ClerkError(409, "duplicate_record", "Machine already exists", machine_id)
    conn.execute(
        "INSERT INTO machines (id, name, default_token_ttl, secret_key, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        (machine_id, name, default_token_ttl, secret_key, now, now),
    )
    conn.execute(
        "INSERT INTO machine_keys (key_hash, machine_id, expires_at) VALUES (?, ?, NULL)",
        (ids.secret_hash(secret_key), machine_id),
    )


def _refuse_self_scope(from_id: str, to_id: str, param: str) -> None:
    """Clerk documents no rule here (ours): a machine calling itself needs no token, and a
    scope to itself would only put its own id in its tokens' audience."""
    if from_id == to_id:
        raise invalid_param(param, "a machine cannot be scoped to itself")


def insert_scopes(conn: sqlite3.Connection, from_id: str, to_ids: list[str], now: int) -> None:
    """Let `from_id` send to each of `to_ids` (existing edges are kept); call inside a write
    transaction."""
    for to_id in to_ids:
        _refuse_self_scope(from_id, to_id, "scoped_machines")
        if not ids.is_machine_id(to_id) or not machine_exists(conn, to_id):
            raise machine_not_found(to_id)
        conn.execute(
            "INSERT OR IGNORE INTO scopes (from_machine_id, to_machine_id, created_at)"
            " VALUES (?, ?, ?)",
            (from_id, to_id, now),
        )


def create_machine(
    conn: sqlite3.Connection,
    name: str,
    *,
    scoped_machines: list[str] | None = None,
    default_token_ttl: int = DEFAULT_TOKEN_TTL,
    machine_id: str | None = None,
    secret_key: str | None = None,
) -> tuple[Machine, str]:
    """Create a machine (with a fresh `ak_` key unless one is given); returns it and its key."""
    scoped_machines = list(dict.fromkeys(scoped_machines or []))
    if len(scoped_machines) > MAX_SCOPES:
        raise invalid_param("scoped_machines", f"at most {MAX_SCOPES} machines")
    machine_id = machine_id or ids.new_machine_id()
    secret_key = secret_key or ids.new_machine_secret_key()
    now = db.now_ms()
    with db.write(conn):
        insert_machine(conn, machine_id, name, secret_key, default_token_ttl, now)
        insert_scopes(conn, machine_id, scoped_machines, now)
    return get_machine(conn, machine_id), secret_key


def update_machine(
    conn: sqlite3.Connection,
    machine_id: str,
    *,
    name: str | None = None,
    default_token_ttl: int | None = None,
) -> Machine:
    get_machine(conn, machine_id)
    with db.write(conn):
        conn.execute(
            "UPDATE machines SET name = COALESCE(?, name),"
            " default_token_ttl = COALESCE(?, default_token_ttl), updated_at = ? WHERE id = ?",
            (name, default_token_ttl, db.now_ms(), machine_id),
        )
    return get_machine(conn, machine_id)


def delete_machine(conn: sqlite3.Connection, machine_id: str) -> None:
    """Delete a machine with its keys, scopes (both directions) and opaque tokens."""
    if not ids.is_machine_id(machine_id):
        raise machine_not_found(machine_id)
    with db.write(conn):
        if conn.execute("DELETE FROM machines WHERE id = ?", (machine_id,)).rowcount == 0:
            raise machine_not_found(machine_id)


def get_secret_key(conn: sqlite3.Connection, machine_id: str) -> str:
    if not ids.is_machine_id(machine_id):
        raise machine_not_found(machine_id)
    row = conn.execute("SELECT secret_key FROM machines WHERE id = ?", (machine_id,)).fetchone()
    if row is None:
        raise machine_not_found(machine_id)
    return row[0]


def rotate_secret_key(conn: sqlite3.Connection, machine_id: str, previous_token_ttl: int) -> str:
    """Give the machine a new key; the old one keeps working for `previous_token_ttl` seconds
    (kept only as a hash)."""
    if not ids.is_machine_id(machine_id):
        raise machine_not_found(machine_id)
    new_key = ids.new_machine_secret_key()
    now = db.now_ms()
    with db.write(conn):
        if not machine_exists(conn, machine_id):
            raise machine_not_found(machine_id)
        conn.execute(
            "DELETE FROM machine_keys WHERE machine_id = ? AND expires_at IS NOT NULL"
            " AND expires_at <= ?",
            (machine_id, now),
        )
        if previous_token_ttl > 0:
            conn.execute(
                "UPDATE machine_keys SET expires_at = ?"
                " WHERE machine_id = ? AND expires_at IS NULL",
                (now + previous_token_ttl * 1000, machine_id),
            )
        else:
            conn.execute(
                "DELETE FROM machine_keys WHERE machine_id = ? AND expires_at IS NULL",
                (machine_id,),
            )
        conn.execute(
            "INSERT INTO machine_keys (key_hash, machine_id, expires_at) VALUES (?, ?, NULL)",
            (ids.secret_hash(new_key), machine_id),
        )
        conn.execute(
            "UPDATE machines SET secret_key = ?, updated_at = ? WHERE id = ?",
            (new_key, now, machine_id),
        )
    return new_key


def machine_id_for_key(conn: sqlite3.Connection, secret_key: str) -> str | None:
    """The machine a secret key (current, or previous and not yet expired) belongs to: one
    lookup by hash, so timing says nothing about how much of a key matched."""
    row = conn.execute(
        "SELECT machine_id FROM machine_keys WHERE key_hash = ?"
        " AND (expires_at IS NULL OR expires_at > ?)",
        (ids.secret_hash(secret_key), db.now_ms()),
    ).fetchone()
    return row[0] if row else None


def add_scope(conn: sqlite3.Connection, from_id: str, to_id: str) -> Scope:
    """Let `from_id` send to `to_id`; 409 if it already may."""
    if not ids.is_machine_id(from_id):
        raise machine_not_found(from_id)
    _refuse_self_scope(from_id, to_id, "to_machine_id")
    now = db.now_ms()
    with db.write(conn):
        if not machine_exists(conn, from_id):
            raise machine_not_found(from_id)
        if not ids.is_machine_id(to_id) or not machine_exists(conn, to_id):
            raise machine_not_found(to_id)
        count = conn.execute(
            "SELECT COUNT(*) FROM scopes WHERE from_machine_id = ?", (from_id,)
        ).fetchone()[0]
        if count >= MAX_SCOPES:
            raise invalid_param("to_machine_id", f"a machine may have at most {MAX_SCOPES} scopes")
        try:
            conn.execute(
                "INSERT INTO scopes (from_machine_id, to_machine_id, created_at) VALUES (?, ?, ?)",
                (from_id, to_id, now),
            )
        except sqlite3.IntegrityError as exc:
            raise ClerkError(
                409,
                "duplicate_record",
                "Scope already exists",
                f"{from_id} may already send to {to_id}",
            ) from exc
        conn.execute("UPDATE machines SET updated_at = ? WHERE id = ?", (now, from_id))
    return Scope(from_id, to_id, now)


def remove_scope(conn: sqlite3.Connection, from_id: str, to_id: str) -> Scope:
    if not ids.is_machine_id(from_id):
        raise machine_not_found(from_id)
    with db.write(conn):
        if not machine_exists(conn, from_id):
            raise machine_not_found(from_id)
        row = conn.execute(
            "DELETE FROM scopes WHERE from_machine_id = ? AND to_machine_id = ?"
            " RETURNING created_at",
            (from_id, to_id),
        ).fetchone()
        if row is None:
            raise not_found("machine scope")
        conn.execute("UPDATE machines SET updated_at = ? WHERE id = ?", (db.now_ms(), from_id))
    return Scope(from_id, to_id, row[0])
