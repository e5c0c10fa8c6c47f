"""Make the test issuer fail on purpose (`m2m_faults`): down, slow, 429 or 5xx; undone at the
end of the test. Errors and delays go through the issuer's fault rules (`/v1/_faults`, see
mock_issuer/README.md); "down" stops the process when the session started it, so connections
are refused, and otherwise answers 503 to every API route."""

from __future__ import annotations

from typing import Any

from .issuer import TestIssuer


class IssuerFaults:
    """Each call adds a rule; rules are tried in order, the first that faults a request wins."""

    def __init__(self, issuer: TestIssuer) -> None:
        self.issuer = issuer
        self._rules: list[dict[str, Any]] = []
        self._stopped = False

    def add(self, route: str = "*", **rule: Any) -> None:
        """Add one fault rule (`status`, `retry_after`, `delay_seconds`, `count`, `share`)."""
        self._rules.append({"route": route, **rule})
        self.issuer.client.set_faults(self._rules)

    def error(self, status: int = 503, route: str = "*", **limits: Any) -> None:
        """Answer `status` (in Clerk's error envelope) on `route`, e.g. `count=2`, `share=0.5`."""
        self.add(route, status=status, **limits)

    def rate_limited(self, route: str = "*", retry_after: int = 1, **limits: Any) -> None:
        """429 too_many_requests with `Retry-After: retry_after`."""
        self.add(route, status=429, retry_after=retry_after, **limits)

    def slow(self, seconds: float, route: str = "*", **limits: Any) -> None:
        """Wait `seconds` (at most 60) before answering normally: past a client's timeout,
        a hang."""
        self.add(route, delay_seconds=seconds, **limits)

    def down(self) -> None:
        """Refuse connections (our own process), else 503 on every API route."""
        if self.issuer.owned:
            self.issuer.stop()
            self._stopped = True
        else:
            self.error(503)

    def rules(self) -> list[dict[str, Any]]:
        """The rules with their counters: `matched` (requests seen) and `faulted`."""
        return self.issuer.client.faults()["rules"]

    def clear(self) -> None:
        """Bring the issuer back up and remove every rule."""
        if self._stopped:
            self.issuer.start()
            self._stopped = False
        self._rules.clear()
        self.issuer.client.clear_faults()
