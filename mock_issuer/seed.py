"""Seeding: machines with fixed ids or names, keys and scopes from a JSON file, applied at
start in one write transaction. Idempotent: machines that already exist (by id, or by name
when the seed gives no id) are left as they are, so keys rotated since are not reset.

Format: {"machines": [{"id"?, "name", "secret_key"?, "default_token_ttl"?,
"scoped_machines"?: [ids or names of machines], "oauth_token_format"?: "jwt" | "opaque"}]}
(`oauth_token_format`, ours: the format `/oauth/token` issues the machine when the request
names none; `jwt` when absent; like the rest, applied only to the machines the seed creates.)
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from . import db, ids, machines, oauth_clients
from .config import APP_DIR
from .errors import ClerkError

OAUTH_TOKEN_FORMAT = "oauth_token_format"  # noqa: S105 (a key name)


class SeedError(ValueError):
    """The seed file is missing or does not match the format."""


def resolve_path(path: str) -> Path:
    """A seed path as given, else relative to the repository root (`mock_issuer/..`)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return APP_DIR.parent / candidate


def load_seed(path: str) -> list[dict[str, Any]]:
    """The machines declared in a seed file, checked."""
    file = resolve_path(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise SeedError(f"cannot read seed file {file}: {exc}") from exc
    entries = data.get("machines") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SeedError(f"{file}: expected an object with a 'machines' list")
    for entry in entries:
        _check_entry(file, entry)
    return entries


def _check_entry(file: Path, entry: Any) -> None:
    """Name and default_token_ttl pass the API's own validators; the self-scope rule is
    applied by machines.insert_scopes when the seed is applied."""
    if not isinstance(entry, dict):
        raise SeedError(f"{file}: every machine must be an object with a 'name'")
    try:
        name = machines.validate_name(entry.get("name"))
        entry["default_token_ttl"] = machines.validate_default_token_ttl(
            entry.get("default_token_ttl", machines.DEFAULT_TOKEN_TTL)
        )
    except ClerkError as err:
        raise SeedError(f"{file}: {err.long_message}") from None
    if "id" in entry and not ids.is_machine_id(entry["id"]):
        raise SeedError(f"{file}: machine id {entry['id']!r} is not mch_ + 27 characters")
    key = entry.get("secret_key")
    if key is not None and (not isinstance(key, str) or not key.startswith("ak_")):
        raise SeedError(f"{file}: secret_key of {name!r} must start with ak_")
    scoped = entry.get("scoped_machines", [])
    if not isinstance(scoped, list) or not all(isinstance(s, str) for s in scoped):
        raise SeedError(f"{file}: scoped_machines of {name!r} must be a list of ids")
    if OAUTH_TOKEN_FORMAT in entry and entry[OAUTH_TOKEN_FORMAT] not in oauth_clients.TOKEN_FORMATS:
        raise SeedError(f"{file}: {OAUTH_TOKEN_FORMAT} of {name!r} must be jwt or opaque")


def apply_seed(conn: sqlite3.Connection, entries: list[dict[str, Any]]) -> list[str]:
    """Create the seed's missing machines and their scopes; returns the ids created."""
    created: list[str] = []
    now = db.now_ms()
    with db.write(conn):
        resolved: dict[str, str] = {}
        for entry in entries:
            existing = _find(conn, entry)
            if existing is None:
                machine_id = entry.get("id") or ids.new_machine_id()
                key = entry.get("secret_key") or ids.new_machine_secret_key()
                ttl = entry["default_token_ttl"]
                try:
                    machines.insert_machine(conn, machine_id, entry["name"], key, ttl, now)
                except sqlite3.IntegrityError as exc:
                    raise SeedError(
                        f"the secret key of {entry['name']!r} is already in use"
                    ) from exc
                if OAUTH_TOKEN_FORMAT in entry:
                    oauth_clients.store_token_format(conn, machine_id, entry[OAUTH_TOKEN_FORMAT])
                created.append(machine_id)
                existing = machine_id
            resolved[entry["name"]] = existing
            resolved[existing] = existing
        for entry in entries:
            from_id = resolved[entry["name"]]
            if from_id not in created:
                continue
            for target in entry.get("scoped_machines", []):
                to_id = resolved.get(target)
                if to_id is None and not machines.machine_exists(conn, target):
                    raise SeedError(f"seed machine {entry['name']!r} scopes unknown {target!r}")
                try:
                    machines.insert_scopes(conn, from_id, [to_id or target], now)
                except ClerkError as err:
                    raise SeedError(f"seed machine {entry['name']!r}: {err.long_message}") from None
    return created


def _find(conn: sqlite3.Connection, entry: dict[str, Any]) -> str | None:
    if entry.get("id"):
        row = conn.execute("SELECT id FROM machines WHERE id = ?", (entry["id"],)).fetchone()
    else:
        row = conn.execute(
            "SELECT id FROM machines WHERE name = ? ORDER BY created_at LIMIT 1", (entry["name"],)
        ).fetchone()
    return row[0] if row else None
