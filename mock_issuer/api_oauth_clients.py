"""`GET`/`PUT /v1/_oauth_clients/<machine_id>` (ours, sk): a machine's settings as an OAuth
client, today its default access-token format at `/oauth/token`.

Off Clerk's surface (fault rules never apply to it; Clerk's `/v1/machines` objects keep exactly
Clerk's shape) and guarded by the instance secret key, like every machine setting.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from . import machines, oauth_clients
from .auth import require_instance
from .db import get_conn
from .requests_util import json_body, require

bp = Blueprint("oauth_clients", __name__)
PATH = "/v1/_oauth_clients/<machine_id>"


def _answer(machine_id: str, token_format: str) -> Any:
    return jsonify(
        {"object": "oauth_client", "client_id": machine_id, "token_format": token_format}
    )


@bp.get(PATH)
def get_oauth_client(machine_id: str) -> Any:
    """The machine's OAuth client settings (the defaults when none were set)."""
    require_instance()
    conn = get_conn()
    machines.get_machine(conn, machine_id)
    return _answer(machine_id, oauth_clients.token_format(conn, machine_id))


@bp.put(PATH)
def put_oauth_client(machine_id: str) -> Any:
    """Set the machine's default token format: body `{"token_format": "jwt" | "opaque"}`."""
    require_instance()
    value = require(json_body({oauth_clients.FIELD}), oauth_clients.FIELD)
    return _answer(machine_id, oauth_clients.set_token_format(get_conn(), machine_id, value))
