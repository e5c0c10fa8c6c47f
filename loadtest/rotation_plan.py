"""The plan of a rotation run (how many users when) and what its stats must prove afterwards.

Kept free of Locust imports so it can be unit-tested without monkey-patching the test process.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from locust.stats import RequestStats

JWT_NAMES = (
    "/receive (jwt "  # JwtVerifyUser names its requests "/receive (jwt start|fresh kid=...)"
)


def planned_users(fraction: float, peak: int) -> int:
    """Users wanted at `fraction` (0..1) of the run: ramp to half the peak over the first quarter,
    hold, spike to the peak from 40 % to 60 %, then settle back to half."""
    base = max(1, math.ceil(peak / 2))
    if fraction < 0.25:
        return max(1, math.ceil(base * fraction / 0.25))
    if 0.4 <= fraction < 0.6:
        return peak
    return base


def check_no_jwt_failures(stats: RequestStats) -> str | None:
    """A key rotation must not fail a single JWT verification, whatever the other limits say."""
    failed = sum(e.num_failures for e in stats.entries.values() if e.name.startswith(JWT_NAMES))
    return f"{failed} JWT verifications failed around the key rotation" if failed else None


def check_both_keys_verified(stats: RequestStats) -> str | None:
    """JWTs signed by the old and by the new key must both have been verified successfully."""
    kids = {
        e.name.rpartition("kid=")[2].removesuffix(")")
        for e in stats.entries.values()
        if e.name.startswith(JWT_NAMES) and e.num_requests > e.num_failures
    }
    if len(kids) < 2:
        return f"JWTs from only {len(kids)} signing key(s) were verified; a rotation needs 2"
    return None
