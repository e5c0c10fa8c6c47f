"""Machine routes under /v1 (instance secret key only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from . import machines
from .auth import require_instance
from .db import get_conn
from .errors import invalid_param
from .requests_util import as_int, as_str, json_body, query_int, require

bp = Blueprint("machines", __name__, url_prefix="/v1/machines")


@bp.before_request
def _instance_only() -> None:
    require_instance()


@bp.get("")
def list_machines() -> Any:
    limit = query_int("limit", 10, 1, 500)
    offset = query_int("offset", 0, 0, 10**9)
    query = request.args.get("query") or None
    order_by = request.args.get("order_by") or "-created_at"
    page, total = machines.list_machines(
        get_conn(), limit=limit, offset=offset, query=query, order_by=order_by
    )
    return jsonify({"data": [m.to_dict() for m in page], "total_count": total})


@bp.post("")
def create_machine() -> Any:
    data = json_body({"name", "scoped_machines", "default_token_ttl"})
    name = machines.validate_name(require(data, "name"))
    scoped = [] if data.get("scoped_machines") is None else data["scoped_machines"]
    if not isinstance(scoped, list) or not all(isinstance(s, str) for s in scoped):
        raise invalid_param("scoped_machines", "must be a list of machine ids")
    ttl = data.get("default_token_ttl")
    ttl = machines.DEFAULT_TOKEN_TTL if ttl is None else machines.validate_default_token_ttl(ttl)
    machine, secret_key = machines.create_machine(
        get_conn(), name, scoped_machines=scoped, default_token_ttl=ttl
    )
    return jsonify({**machine.to_dict(), "secret_key": secret_key})


@bp.get("/<machine_id>")
def get_machine(machine_id: str) -> Any:
    return jsonify(machines.get_machine(get_conn(), machine_id).to_dict())


@bp.patch("/<machine_id>")
def update_machine(machine_id: str) -> Any:
    data = json_body({"name", "default_token_ttl"}, required=False)
    name = None if data.get("name") is None else machines.validate_name(data["name"])
    ttl = data.get("default_token_ttl")
    ttl = None if ttl is None else machines.validate_default_token_ttl(ttl)
    machine = machines.update_machine(get_conn(), machine_id, name=name, default_token_ttl=ttl)
    return jsonify(machine.to_dict())


@bp.delete("/<machine_id>")
def delete_machine(machine_id: str) -> Any:
    machines.delete_machine(get_conn(), machine_id)
    return jsonify({"object": "machine", "id": machine_id, "deleted": True})


@bp.get("/<machine_id>/secret_key")
def get_secret_key(machine_id: str) -> Any:
    secret = machines.get_secret_key(get_conn(), machine_id)
    return jsonify({"object": "machine_secret_key", "secret": secret})


@bp.post("/<machine_id>/secret_key/rotate")
def rotate_secret_key(machine_id: str) -> Any:
    data = json_body({"previous_token_ttl"})
    ttl = as_int(
        "previous_token_ttl",
        require(data, "previous_token_ttl"),
        0,
        machines.MAX_PREVIOUS_TOKEN_TTL,
    )
    secret = machines.rotate_secret_key(get_conn(), machine_id, ttl)
    return jsonify({"object": "machine_secret_key", "secret": secret})


@bp.post("/<machine_id>/scopes")
def create_scope(machine_id: str) -> Any:
    data = json_body({"to_machine_id"})
    to_id = as_str("to_machine_id", require(data, "to_machine_id"), max_len=64)
    return jsonify(machines.add_scope(get_conn(), machine_id, to_id).to_dict())


@bp.delete("/<machine_id>/scopes/<other_id>")
def delete_scope(machine_id: str, other_id: str) -> Any:
    scope = machines.remove_scope(get_conn(), machine_id, other_id)
    return jsonify(scope.to_dict(deleted=True))
