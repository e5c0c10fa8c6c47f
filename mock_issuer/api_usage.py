"""`GET /v1/usage` (sk, ours): token creations and verifications counted per time bucket."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from . import ids, usage
from .auth import require_instance
from .db import get_conn
from .errors import invalid_param
from .requests_util import query_int

bp = Blueprint("usage", __name__)


@bp.get("/v1/usage")
def get_usage() -> Any:
    require_instance()
    range_name = request.args.get("range") or "day"
    if range_name not in usage.RANGES:
        raise invalid_param("range", "must be one of hour, day, 30d")
    span = usage.RANGES[range_name]
    bucket = None
    if request.args.get("bucket"):
        min_bucket = max(1, -(-span // usage.MAX_BUCKETS))
        bucket = query_int("bucket", 0, min_bucket, span)
        if bucket % 60 and range_name not in usage.SECOND_BUCKET_RANGES:
            raise invalid_param("bucket", f"must be whole minutes for range {range_name}")
    machine_id = request.args.get("machine_id") or None
    if machine_id is not None and not ids.is_machine_id(machine_id):
        raise invalid_param("machine_id", "must be a machine id (mch_ + 27 characters)")
    report = usage.usage_report(
        get_conn(), range_name, machine_id=machine_id, bucket_seconds=bucket
    )
    return jsonify(report)
