"""The few issuer calls the load test makes outside the measured traffic: minting the tokens the
verification users present, revoking one, and rotating the signing key mid-run."""

from __future__ import annotations

from dataclasses import dataclass

import requests


class IssuerError(RuntimeError):
    """The issuer refused or failed a call; the message names the route and status, never a key."""


@dataclass(frozen=True)
class MintedToken:
    token: str
    id: str
    expiration_ms: int | None


@dataclass(frozen=True)
class IssuerClient:
    """Talks to one issuer (`.../v1` routes) with a timeout on every call."""

    issuer_url: str
    timeout_s: float = 10.0
    verify: bool | str = True  # requests' `verify`: True, or a private CA bundle's path

    def _post(self, path: str, key: str, body: dict, expect: int) -> dict:
        url = f"{self.issuer_url.rstrip('/')}{path}"
        try:
            response = requests.post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=self.timeout_s,
                verify=self.verify,
            )
        except requests.RequestException as exc:
            raise IssuerError(f"POST {path}: {type(exc).__name__}") from None
        if response.status_code != expect:
            raise IssuerError(f"POST {path}: HTTP {response.status_code} {_error_code(response)}")
        try:
            return response.json()
        except ValueError:
            raise IssuerError(f"POST {path}: answer is not JSON") from None

    def mint(self, machine_key: str, token_format: str, ttl_s: float | None = None) -> MintedToken:
        """Create a token with a machine's `ak_` key (201 per the wire contract)."""
        body: dict = {"token_format": token_format}
        if ttl_s is not None:
            body["seconds_until_expiration"] = ttl_s
        data = self._post("/v1/m2m_tokens", machine_key, body, expect=201)
        if not isinstance(data.get("token"), str):
            raise IssuerError("POST /v1/m2m_tokens: answer has no token")
        return MintedToken(data["token"], str(data.get("id", "")), data.get("expiration"))

    def revoke(self, machine_key: str, token_id: str) -> None:
        self._post(
            f"/v1/m2m_tokens/{token_id}/revoke",
            machine_key,
            {"revocation_reason": "load test: revoked token traffic"},
            expect=200,
        )

    def rotate_signing_key(self, instance_key: str, path: str) -> dict:
        """Ask the issuer to rotate its JWT signing key (an instance-key route)."""
        return self._post(path, instance_key, {}, expect=200)


def _error_code(response: requests.Response) -> str:
    """The Clerk error code of a failed answer, if it has one (codes never hold secrets)."""
    try:
        return str(response.json()["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
