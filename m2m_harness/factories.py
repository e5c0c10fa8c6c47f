"""Machines and tokens on a test issuer: what the `m2m_machines` and `m2m_token` fixtures hand
out."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .issuer_client import IssuerClient, IssuerError


@dataclass(frozen=True)
class Machine:
    """A machine on the issuer: its id, name and secret key (`ak_...`, kept out of repr)."""

    id: str
    name: str
    secret_key: str = field(repr=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class MintedToken:
    """A token the issuer minted: the string to send, and the issuer's token object."""

    token: str = field(repr=False)
    id: str
    format: str
    subject: str
    scopes: tuple[str, ...]
    expiration: int | None  # Unix milliseconds

    @property
    def headers(self) -> dict[str, str]:
        """`Authorization: Bearer <token>`, ready for requests or a Flask test client."""
        return bearer(self.token)


class MachineFactory:
    """Create machines and scopes: `m2m_machines("billing", scoped_to=[receiver])`."""

    def __init__(self, client: IssuerClient) -> None:
        self.client = client

    def __call__(
        self, name: str = "machine", *, scoped_to: Iterable[Machine] = (), default_token_ttl=3600
    ) -> Machine:
        """A new machine (the name gets a random suffix) that may send to `scoped_to`."""
        created = self.client.create_machine(
            f"{name}-{secrets.token_hex(4)}", [m.id for m in scoped_to], default_token_ttl
        )
        return Machine(created["id"], created["name"], created["secret_key"])

    def scope(self, caller: Machine, receiver: Machine) -> None:
        """Let `caller` send to `receiver` (nothing happens if it already may)."""
        try:
            self.client.add_scope(caller.id, receiver.id)
        except IssuerError as exc:
            if exc.status != 409:
                raise


class TokenFactory:
    """Mint real tokens: `m2m_token()`, `m2m_token(format="jwt", lifetime=30, claims={...})`."""

    def __init__(self, machines: MachineFactory, caller: Machine, audience: Machine) -> None:
        self.machines = machines
        self.caller = caller
        self.audience = audience

    def __call__(
        self,
        *,
        caller: Machine | None = None,
        audience: Machine | None = None,
        format: str = "opaque",  # Clerk's token_format
        lifetime: float | None = None,
        claims: dict[str, Any] | None = None,
    ) -> MintedToken:
        """A token `caller` mints for `audience` (default: the `m2m_caller` fixture for the
        `m2m_receiver` fixture); the caller is scoped to the audience first if need be."""
        caller = caller or self.caller
        audience = audience or self.audience
        self.machines.scope(caller, audience)
        return mint(self.machines.client, caller, format, lifetime, claims)


def mint(
    client: IssuerClient,
    caller: Machine,
    format: str = "opaque",
    lifetime: float | None = None,
    claims: dict[str, Any] | None = None,
) -> MintedToken:
    """POST /m2m_tokens as `caller` with whatever scopes it has now."""
    obj = client.create_token(
        caller.secret_key, token_format=format, seconds_until_expiration=lifetime, claims=claims
    )
    return MintedToken(
        obj["token"], obj["id"], format, obj["subject"], tuple(obj["scopes"]), obj["expiration"]
    )
