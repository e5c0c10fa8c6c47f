"""Drive the mock issuer's fault rules from tests: `IssuerFaults(url, sk)`.

    faults = IssuerFaults(issuer.url, TEST_SECRET_KEY)
    faults.set("POST /m2m_tokens", status=503, count=2)  # the next two creations answer 503
    faults.rule()                   # {..., "matched": creations seen, "faulted": of those}
    faults.set("POST /m2m_tokens")  # no fault: the rule only counts
    faults.clear()

Talks to the admin route (`GET` lists, `PUT` replaces, `DELETE` clears `/v1/_faults`) through
the plugin's issuer client, which raises an AssertionError on any other answer than 2xx.
"""

from __future__ import annotations

from typing import Any

from m2m_harness.issuer_client import IssuerClient


class IssuerFaults:
    """Set, read and clear the issuer's fault rules."""

    def __init__(self, url: str, secret_key: str) -> None:
        self._client = IssuerClient(url, secret_key)
        self.url = f"{self._client.url}/v1/_faults"

    def __repr__(self) -> str:
        return f"IssuerFaults({self.url!r})"

    def state(self) -> dict[str, Any]:
        return self._client.faults()

    def set(self, route: str, **rule: Any) -> dict[str, Any]:
        """Replace every rule with this one (status=, retry_after=, delay_seconds=, count=,
        share=); with neither status nor delay it only counts."""
        return self._client.set_faults([{"route": route, **rule}])

    def clear(self) -> dict[str, Any]:
        return self._client.clear_faults()

    def rule(self, index: int = 0) -> dict[str, Any]:
        """A rule with its counters: `matched` (requests it saw), `faulted` (of those)."""
        return self.state()["rules"][index]
