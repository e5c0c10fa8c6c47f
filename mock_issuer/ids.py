"""Identifier and secret formats: generation (from `secrets`) and shape checks."""

from __future__ import annotations

import hashlib
import re
import secrets
import string

_ALNUM = string.ascii_letters + string.digits

MACHINE_ID_RE = re.compile(r"^mch_[A-Za-z0-9_]{27}$")
TOKEN_ID_RE = re.compile(r"^mt_[0-9a-f]{32}$")


def _random_word(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def new_instance_id() -> str:
    return "ins_" + _random_word(27)


def new_machine_id() -> str:
    return "mch_" + _random_word(27)


def new_machine_secret_key() -> str:
    """A machine secret key: `ak_` + 32 hex characters (128 bits), Clerk's shape."""
    return "ak_" + secrets.token_hex(16)


def new_token_id() -> str:
    return "mt_" + secrets.token_hex(16)


def new_token_secret() -> str:
    """An opaque token: `mt_` + 64 hex characters, 256 bits from `secrets`."""
    return "mt_" + secrets.token_hex(32)


def new_kid() -> str:
    return "mik_" + secrets.token_hex(12)


def secret_hash(secret: str) -> bytes:
    """SHA-256 of a high-entropy secret: what is stored and looked up instead of the secret."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def is_machine_id(value: object) -> bool:
    return isinstance(value, str) and MACHINE_ID_RE.match(value) is not None


def is_token_id(value: object) -> bool:
    return isinstance(value, str) and TOKEN_ID_RE.match(value) is not None
