"""Who is calling: parse `Authorization: Bearer <key>` and resolve it to the instance (sk_)
or a machine (ak_). The instance key is compared in constant time; machine keys are looked
up by their SHA-256."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from flask import g, request

from . import machines
from .config import current_settings
from .db import get_conn
from .errors import ClerkError

MAX_KEY_LENGTH = 512


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: the instance (`machine_id` None) or one machine."""

    kind: str  # "instance" or "machine"
    machine_id: str | None = None
    key: str = field(default="", repr=False)

    @property
    def is_instance(self) -> bool:
        return self.kind == "instance"


def _format_invalid(detail: str) -> ClerkError:
    return ClerkError(
        401,
        "authorization_header_format_invalid",
        "Invalid Authorization header format",
        f"The Authorization header must be 'Bearer <key>': {detail}",
    )


def _clerk_key_invalid() -> ClerkError:
    return ClerkError(
        401,
        "clerk_key_invalid",
        "The provided Clerk Secret Key is invalid",
        "The Bearer key is not this instance's secret key (sk_...).",
    )


def _machine_key_invalid(detail: str = "") -> ClerkError:
    return ClerkError(
        401,
        "machine_secret_key_invalid",
        "The provided Machine Secret Key is invalid",
        detail or "The Bearer key is not a valid machine secret key (ak_...).",
    )


def bearer_key() -> str:
    """The key in `Authorization: Bearer <key>`, or a 401 naming what is wrong."""
    header = request.headers.get("Authorization")
    if header is None:
        raise _format_invalid("the header is missing")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer":
        raise _format_invalid("the scheme must be Bearer")
    key = key.strip()
    if not key or " " in key or len(key) > MAX_KEY_LENGTH:
        raise _format_invalid("the key is missing or malformed")
    return key


def _is_instance_key(key: str) -> bool:
    expected = current_settings().clerk_secret_key
    return hmac.compare_digest(key.encode("utf-8"), expected.encode("utf-8"))


def authenticate(*, allow_instance: bool = True, allow_machine: bool = True) -> Caller:
    """Resolve the caller of this request (cached on `g`), enforcing which kinds may call."""
    key = bearer_key()
    if key.startswith("ak_"):
        if not allow_machine:
            raise _clerk_key_invalid()
        machine_id = machines.machine_id_for_key(get_conn(), key)
        if machine_id is None:
            raise _machine_key_invalid()
        caller = Caller("machine", machine_id, key)
    else:
        if not allow_instance:
            raise _machine_key_invalid("This endpoint must be called with a machine secret key.")
        if not key.startswith("sk_") or not _is_instance_key(key):
            raise _clerk_key_invalid()
        caller = Caller("instance", None, key)
    g.caller = caller
    return caller


def require_instance() -> Caller:
    return authenticate(allow_machine=False)


def require_machine() -> Caller:
    return authenticate(allow_instance=False)
