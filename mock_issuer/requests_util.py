"""Strict parsing of JSON bodies and query parameters into Clerk errors that name the field.

Numbers may arrive as floats (`10.0`): the Python SDK sends them that way.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import request
from werkzeug.exceptions import HTTPException

from .errors import body_invalid, invalid_param, missing_param


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A JSON number as a float; `1e400` overflows to infinity, which JSON cannot carry."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _is_valid_unicode(data: Any) -> bool:
    """False when a string holds a lone surrogate (`"\\ud800"`): it cannot be stored or hashed."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _raw_body() -> bytes:
    """The request body; a body the server cannot read (gunicorn's reader raising on a broken
    chunked encoding) is the client's fault: 400, not 500."""
    try:
        return request.get_data(cache=True)
    except HTTPException:
        raise
    except Exception as exc:
        raise body_invalid("the request body could not be read") from exc


def json_body(allowed: set[str], *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object; unknown fields, non-objects and malformed JSON are 400s.
    An empty body counts as `{}` when the route has no required body."""
    raw = _raw_body()
    if not raw.strip():
        if required:
            raise body_invalid("a JSON object is required")
        return {}
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise body_invalid("malformed JSON") from exc
    except RecursionError as exc:
        raise body_invalid("the JSON is nested too deeply") from exc
    if not _is_valid_unicode(data):
        raise body_invalid("strings must be valid Unicode (no lone surrogates)")
    if not isinstance(data, dict):
        raise body_invalid("the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise body_invalid(f"unknown field {unknown[0]!r}", param=unknown[0])
    return data


def as_int(name: str, value: Any, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; integral floats such as 10.0 are accepted, booleans are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_param(name, "must be an integer")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise invalid_param(name, "must be an integer")
        value = int(value)
    if not lo <= value <= hi:
        raise invalid_param(name, f"must be between {lo} and {hi}")
    return value


def as_number(name: str, value: Any, lo: float, hi: float) -> float:
    """A finite number in [lo, hi] (fractions allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_param(name, "must be a number")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise invalid_param(name, f"must be at least {lo:g} and at most {hi:g}")
    return float(value)


def as_str(name: str, value: Any, *, max_len: int = 256, min_len: int = 1) -> str:
    if not isinstance(value, str):
        raise invalid_param(name, "must be a string")
    if not min_len <= len(value) <= max_len:
        raise invalid_param(name, f"must be {min_len} to {max_len} characters long")
    return value


def require(data: dict[str, Any], name: str) -> Any:
    if name not in data or data[name] is None:
        raise missing_param(name)
    return data[name]


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter; `10.0` is accepted (the Python SDK sends floats)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise invalid_param(name, "must be a number") from exc
    return as_int(name, value, lo, hi)


def query_bool(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid_param(name, "must be true or false")
