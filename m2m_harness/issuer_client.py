"""A tiny client of the mock issuer for tests: machines, scopes, tokens, faults, test signing.

Talks to a real process over HTTP (`IssuerClient(url, secret_key)`) or to an in-process Flask
app through its test client (`IssuerClient.for_app(app)`), so the plugin's factories work with
either. Every non-2xx answer raises `IssuerError` with the status and Clerk's error code, never
a key or a token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

TIMEOUT_SECONDS = 10.0


class IssuerError(AssertionError):
    """The issuer refused a call the test relied on (an AssertionError, so pytest shows it as
    a failed expectation)."""

    def __init__(self, method: str, path: str, status: int, code: str) -> None:
        super().__init__(f"{method} {path}: the issuer answered {status} {code}".rstrip())
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


class Transport(Protocol):
    def __call__(self, method: str, path: str, key: str, body: Any) -> Answer: ...


@dataclass
class HttpTransport:
    """Requests over HTTP with a timeout, through one keep-alive session."""

    url: str
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __call__(self, method: str, path: str, key: str, body: Any) -> Answer:
        response = self.session.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=TIMEOUT_SECONDS,
        )
        return Answer(response.status_code, _json_or_none(response))


@dataclass
class FlaskTransport:
    """Requests through a Flask app's test client: no process, no port."""

    app: Any

    def __call__(self, method: str, path: str, key: str, body: Any) -> Answer:
        client = self.app.test_client()
        response = client.open(
            path, method=method, json=body, headers={"Authorization": f"Bearer {key}"}
        )
        return Answer(response.status_code, response.get_json(silent=True))


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class IssuerClient:
    """The issuer calls tests need, each authenticated with the instance key (`sk_...`) unless
    a machine key is given."""

    def __init__(self, url: str, secret_key: str, transport: Transport | None = None) -> None:
        self.url = url.rstrip("/")
        self.secret_key = secret_key
        self._transport = transport or HttpTransport(self.url)

    @classmethod
    def for_app(cls, app: Any) -> IssuerClient:
        """A client of an in-process issuer app; its URL is the app's MOCK_ISSUER_URL."""
        settings = app.extensions["settings"]
        return cls(settings.mock_issuer_url, settings.clerk_secret_key, FlaskTransport(app))

    def __repr__(self) -> str:
        return f"IssuerClient({self.url!r})"

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        """The JSON answer of a 2xx; IssuerError otherwise."""
        answer = self._transport(method, path, key or self.secret_key, body)
        if not 200 <= answer.status < 300:
            raise IssuerError(method, path, answer.status, _error_code(answer.body))
        return answer.body

    # machines and scopes

    def create_machine(
        self, name: str, scoped_machines: list[str] | None = None, default_token_ttl: int = 3600
    ) -> dict[str, Any]:
        body = {"name": name, "scoped_machines": scoped_machines or []}
        return self.call("POST", "/v1/machines", {**body, "default_token_ttl": default_token_ttl})

    def add_scope(self, from_id: str, to_id: str) -> dict[str, Any]:
        return self.call("POST", f"/v1/machines/{from_id}/scopes", {"to_machine_id": to_id})

    # tokens

    def create_token(self, machine_key: str, **options: Any) -> dict[str, Any]:
        """POST /m2m_tokens with a machine key; `options` are Clerk's create fields."""
        return self.call("POST", "/m2m_tokens", options, key=machine_key)

    def revoke_token(self, token_id: str, reason: str | None = None) -> dict[str, Any]:
        body = {"revocation_reason": reason}
        return self.call("POST", f"/m2m_tokens/{token_id}/revoke", body)

    def verify_token(self, token: str, key: str | None = None) -> dict[str, Any]:
        return self.call("POST", "/m2m_tokens/verify", {"token": token}, key=key)

    def jwks(self) -> dict[str, Any]:
        return self.call("GET", "/v1/jwks")

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT of exactly `claims`, signed with the issuer's active key (`POST /v1/_sign`)."""
        return self.call("POST", "/v1/_sign", {"claims": claims})["token"]

    # fault rules

    def faults(self) -> dict[str, Any]:
        return self.call("GET", "/v1/_faults")

    def set_faults(self, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call("PUT", "/v1/_faults", {"rules": rules})

    def clear_faults(self) -> dict[str, Any]:
        return self.call("DELETE", "/v1/_faults")


def _error_code(body: Any) -> str:
    """Clerk's error code of an error answer, or "" when the body is not Clerk's envelope."""
    try:
        return str(body["errors"][0]["code"])
    except (TypeError, KeyError, IndexError):
        return ""
