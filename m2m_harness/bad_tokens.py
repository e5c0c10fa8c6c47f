"""Tokens a receiver must refuse, one per check it has to make (`m2m_bad_token(kind)`).

Each bad token is a genuine token for the receiver under test with exactly one thing wrong,
so a receiver that accepts it is missing exactly the check the kind is named for:

| kind | format | what is wrong | made by |
|---|---|---|---|
| expired | jwt | `exp` 10 minutes ago (past any sane leeway) | issuer's key, `/v1/_sign` |
| not_yet_valid | jwt | `nbf` 10 minutes ahead | issuer's key, `/v1/_sign` |
| wrong_issuer | jwt | `iss` is another issuer | issuer's key, `/v1/_sign` |
| wrong_audience | jwt | minted by a machine scoped to another receiver only | the issuer |
| not_scoped | opaque | minted by a machine scoped to nobody | the issuer |
| revoked | opaque | revoked after minting | the issuer |
| unknown_key | jwt | signed by a key made in the test, carried in the header (`jwk`) | PyJWT |
| tampered | jwt | `sub` changed after signing (impersonation) | the issuer, then edited |
| alg_none | jwt | `alg: none`, no signature | PyJWT |
| garbage | - | not a token at all | - |

The three signed via `POST /v1/_sign` carry a valid signature by the key the receiver trusts,
so they prove the claim check itself, not the signature check.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_decode, base64url_encode

from .factories import Machine, MachineFactory, bearer, mint

BAD_TOKEN_KINDS = (
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "revoked",
    "unknown_key",
    "tampered",
    "alg_none",
    "wrong_issuer",
    "not_scoped",
    "garbage",
)
SKEW_SECONDS = 600  # how far outside its validity an expired / not-yet-valid token is
OTHER_ISSUER = "https://issuer.invalid"


@dataclass(frozen=True)
class BadToken:
    """A token the receiver must refuse, and the kind of bad it is."""

    kind: str
    token: str = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@cache
def foreign_key() -> rsa.RSAPrivateKey:
    """An RSA key no issuer published, generated once per test process."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class BadTokenFactory:
    """`m2m_bad_token("expired")`: a bad token from `caller` for `audience`."""

    def __init__(self, machines: MachineFactory, caller: Machine, audience: Machine) -> None:
        self.machines = machines
        self.client = machines.client
        self.caller = caller
        self.audience = audience

    def __call__(
        self, kind: str, *, caller: Machine | None = None, audience: Machine | None = None
    ) -> BadToken:
        if kind not in BAD_TOKEN_KINDS:
            known = ", ".join(BAD_TOKEN_KINDS)
            raise ValueError(f"unknown bad-token kind {kind!r}: one of {known}")
        caller = caller or self.caller
        audience = audience or self.audience
        make = getattr(self, f"_{kind}")
        return BadToken(kind, make(caller, audience))

    def _genuine_jwt(self, caller: Machine, audience: Machine) -> str:
        self.machines.scope(caller, audience)
        return mint(self.client, caller, "jwt").token

    def _genuine_parts(self, caller: Machine, audience: Machine) -> tuple[dict, dict[str, Any]]:
        """Header and claims of a real JWT for this caller and audience (read, not verified:
        they are only the starting point of a token that is meant to be refused)."""
        token = self._genuine_jwt(caller, audience)
        claims = jwt.decode(token, options={"verify_signature": False})
        return jwt.get_unverified_header(token), claims

    def _resigned(self, caller: Machine, audience: Machine, **changes: Any) -> str:
        """Genuine claims with `changes`, signed by the issuer's own active key."""
        return self.client.sign({**self._genuine_parts(caller, audience)[1], **changes})

    def _expired(self, caller: Machine, audience: Machine) -> str:
        now = int(time.time())
        past = now - 2 * SKEW_SECONDS
        return self._resigned(caller, audience, iat=past, nbf=past, exp=now - SKEW_SECONDS)

    def _not_yet_valid(self, caller: Machine, audience: Machine) -> str:
        now = int(time.time())
        return self._resigned(caller, audience, nbf=now + SKEW_SECONDS, exp=now + 2 * SKEW_SECONDS)

    def _wrong_issuer(self, caller: Machine, audience: Machine) -> str:
        return self._resigned(caller, audience, iss=OTHER_ISSUER)

    def _wrong_audience(self, caller: Machine, audience: Machine) -> str:
        elsewhere = self.machines("other-receiver")
        stranger = self.machines("wrong-audience-caller", scoped_to=[elsewhere])
        return mint(self.client, stranger, "jwt").token

    def _not_scoped(self, caller: Machine, audience: Machine) -> str:
        return mint(self.client, self.machines("unscoped-caller"), "opaque").token

    def _revoked(self, caller: Machine, audience: Machine) -> str:
        self.machines.scope(caller, audience)
        minted = mint(self.client, caller, "opaque")
        self.client.revoke_token(minted.id, "revoked by a rejection test")
        return minted.token

    def _unknown_key(self, caller: Machine, audience: Machine) -> str:
        key = foreign_key()
        header, claims = self._genuine_parts(caller, audience)
        public_jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        headers = {**header, "kid": f"unknown-{secrets.token_hex(8)}", "jwk": public_jwk}
        return jwt.encode(claims, key, algorithm="RS256", headers=headers)

    def _tampered(self, caller: Machine, audience: Machine) -> str:
        header, payload, signature = self._genuine_jwt(caller, audience).split(".")
        claims = json.loads(base64url_decode(payload))
        claims["sub"] = "mch_" + secrets.token_hex(14)[:27]  # another machine's id
        edited = base64url_encode(json.dumps(claims, separators=(",", ":")).encode()).decode()
        return f"{header}.{edited}.{signature}"

    def _alg_none(self, caller: Machine, audience: Machine) -> str:
        header, claims = self._genuine_parts(caller, audience)
        header = {k: v for k, v in header.items() if k != "alg"}
        return jwt.encode(claims, None, algorithm="none", headers=header)

    def _garbage(self, caller: Machine, audience: Machine) -> str:
        return f"garbage{secrets.token_urlsafe(24)}"
