"""Drive the mock issuer's fault rules from tests: `IssuerFaults(url, sk)`.

    faults = IssuerFaults(issuer.url, TEST_SECRET_KEY)
    faults.set("POST /m2m_tokens", status=503, count=2)  # the next two creations answer 503
    faults.rule()                   # {..., "matched": creations seen, "faulted": of those}
    faults.set("POST /m2m_tokens")  # no fault: the rule only counts
    faults.clear()

Talks to the admin route: `GET` lists, `PUT` replaces, `DELETE` clears `/v1/_faults`.
"""

from __future__ import annotations

from typing import Any

import requests


class IssuerFaults:
    """Set, read and clear the issuer's fault rules."""

    def __init__(self, url: str, secret_key: str, timeout: float = 10) -> None:
        self.url = f"{url.rstrip('/')}/v1/_faults"
        self._headers = {"Authorization": f"Bearer {secret_key}"}
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"IssuerFaults({self.url!r})"

    def _call(self, method: str, body: Any = None) -> dict[str, Any]:
        response = requests.request(
            method, self.url, json=body, headers=self._headers, timeout=self.timeout
        )
        if response.status_code != 200:
            raise AssertionError(f"{method} {self.url}: {response.status_code} {response.text}")
        return response.json()

    def state(self) -> dict[str, Any]:
        return self._call("GET")

    def set(self, route: str, **rule: Any) -> dict[str, Any]:
        """Replace every rule with this one (status=, retry_after=, delay_seconds=, count=,
        share=); with neither status nor delay it only counts."""
        return self._call("PUT", {"rules": [{"route": route, **rule}]})

    def clear(self) -> dict[str, Any]:
        return self._call("DELETE")

    def rule(self, index: int = 0) -> dict[str, Any]:
        """A rule with its counters: `matched` (requests it saw), `faulted` (of those)."""
        return self.state()["rules"][index]
