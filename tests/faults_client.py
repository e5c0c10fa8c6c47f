"""Drive the mock issuer's fault injection from tests: `IssuerFaults(url, sk)`.

    faults = IssuerFaults(issuer.url, TEST_SECRET_KEY)
    with faults.injected("POST /m2m_tokens", status=503, count=2):
        ...                                   # the next two creations answer 503
    faults.count("POST /m2m_tokens")          # requests the issuer received on that route

Talks to the admin route `GET/PUT/DELETE /v1/_faults` and `POST /v1/_faults/rules`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests


class IssuerFaults:
    """Set, add, read and clear the issuer's fault rules, rate limit and request counters."""

    def __init__(self, url: str, secret_key: str, timeout: float = 10) -> None:
        self.url = f"{url.rstrip('/')}/v1/_faults"
        self._headers = {"Authorization": f"Bearer {secret_key}"}
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"IssuerFaults({self.url!r})"

    def _call(self, method: str, path: str = "", body: Any = None) -> dict[str, Any]:
        response = requests.request(
            method, self.url + path, json=body, headers=self._headers, timeout=self.timeout
        )
        if response.status_code != 200:
            raise AssertionError(f"{method} {path or '/'}: {response.status_code} {response.text}")
        return response.json()

    def state(self) -> dict[str, Any]:
        return self._call("GET")

    def set(self, route: str = "*", *, count_requests: bool = True, **rule: Any) -> dict:
        """Replace every rule with this one (status=, share=, count=, latency_ms=,
        hang_seconds=, retry_after=); request counting stays on."""
        return self.set_rules([{"route": route, **rule}], count_requests=count_requests)

    def set_rules(
        self, rules: list[dict[str, Any]], *, rate_limit: str | None = None,
        count_requests: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        body = {"rules": rules, "rate_limit": rate_limit, "count_requests": count_requests}
        return self._call("PUT", body=body)

    def add(self, route: str = "*", **rule: Any) -> dict[str, Any]:
        """Append one rule, keeping the others and their counters."""
        return self._call("POST", "/rules", {"route": route, **rule})

    def rate_limit(self, spec: str, *, count_requests: bool = True) -> dict[str, Any]:
        """Emulate Clerk's rate limit (`development`, `production`, `N/Ws`); drops the rules."""
        return self.set_rules([], rate_limit=spec, count_requests=count_requests)

    def count_requests(self) -> dict[str, Any]:
        """No faults, but count the requests per route from now on."""
        return self.set_rules([], count_requests=True)

    def clear(self) -> dict[str, Any]:
        """Everything off and every counter zeroed."""
        return self._call("DELETE")

    def counts(self) -> dict[str, int]:
        """Requests received per route (`"POST /m2m_tokens"`, `/v1` folded in) while on."""
        return self.state()["request_counts"]

    def count(self, route: str) -> int:
        return self.counts().get(route, 0)

    def rule(self, index: int = 0) -> dict[str, Any]:
        """A rule with its `matched`, `faulted` and `remaining` counters."""
        return self.state()["rules"][index]

    @contextmanager
    def injected(self, route: str = "*", **rule: Any) -> Iterator[IssuerFaults]:
        """The rule holds inside the block; everything is cleared on the way out."""
        self.set(route, **rule)
        try:
            yield self
        finally:
            self.clear()
