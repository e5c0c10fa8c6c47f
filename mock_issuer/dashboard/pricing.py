"""Estimated monthly cost of M2M usage at Clerk's list prices, with the monthly free tiers applied.

Prices are settings (environment variables, see config.py) because Clerk has quoted more than one
verification price; the defaults are the ones in the wire reference. Money is Decimal, never float.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..config import DEFAULTS, Settings
from ..usage import CountKey

PROJECTION_WINDOW_DAYS = 30


@dataclass(frozen=True)
class Prices:
    """Price per token creation and per opaque verification (USD) and the monthly free counts."""

    creation: Decimal
    verification: Decimal
    free_creations: int
    free_verifications: int

    @classmethod
    def of(cls, settings: Settings) -> Prices:
        """The prices an issuer's settings name (MOCK_ISSUER_PRICE_*, MOCK_ISSUER_FREE_*)."""
        return cls(
            creation=settings.mock_issuer_price_creation,
            verification=settings.mock_issuer_price_verification,
            free_creations=settings.mock_issuer_free_creations,
            free_verifications=settings.mock_issuer_free_verifications,
        )


CLERK_PRICES = Prices.of(DEFAULTS)  # Clerk's list prices: the settings' defaults


@dataclass(frozen=True)
class LineItem:
    """One billed quantity: how many happened, how many were free, what the rest costs."""

    label: str
    count: int
    free: int
    billable: int
    unit_price: Decimal
    cost: Decimal


@dataclass(frozen=True)
class CostEstimate:
    """Month-to-date cost, and the month's projected cost: the trailing 30 days' usage scaled to
    the days of this (UTC calendar) month, so a few events early in a month do not blow up."""

    month_label: str
    days_in_month: int
    month_to_date: tuple[LineItem, LineItem]
    projected: tuple[LineItem, LineItem]

    @property
    def month_to_date_total(self) -> Decimal:
        return sum((item.cost for item in self.month_to_date), Decimal(0))

    @property
    def projected_total(self) -> Decimal:
        return sum((item.cost for item in self.projected), Decimal(0))


def billable_counts(counts: Counter[CountKey]) -> tuple[int, int]:
    """(token creations, opaque verifications): what Clerk bills. Verifications count whatever
    their outcome; reuses of an existing token are not creations; JWT verifications are free."""
    creations = sum(n for (kind, _, _), n in counts.items() if kind == "create")
    opaque_verifications = sum(
        n for (kind, fmt, _), n in counts.items() if kind == "verify" and fmt == "opaque"
    )
    return creations, opaque_verifications


def line_item(label: str, count: int, free_tier: int, unit_price: Decimal) -> LineItem:
    """Cost of `count` events in one month: the first `free_tier` are free."""
    free = min(count, free_tier)
    billable = count - free
    return LineItem(label, count, free, billable, unit_price, unit_price * billable)


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """Start of this UTC calendar month and start of the next."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def days_in_month(now: datetime) -> int:
    start, end = month_bounds(now)
    return (end - start).days


def estimate(
    month_to_date: tuple[int, int],
    trailing_30_days: tuple[int, int],
    prices: Prices,
    now: datetime,
) -> CostEstimate:
    """Bill this month's (creations, opaque verifications) so far, and project the month from
    the counts of the trailing 30 days times days-in-month / 30.

    JWT verifications happen on the receiver with the public keys, so they are never billed.
    """
    days = days_in_month(now)
    projected_creations, projected_verifications = (
        round(count * days / PROJECTION_WINDOW_DAYS) for count in trailing_30_days
    )
    return CostEstimate(
        month_label=now.astimezone(UTC).strftime("%B %Y"),
        days_in_month=days,
        month_to_date=_line_items(*month_to_date, prices),
        projected=_line_items(projected_creations, projected_verifications, prices),
    )


def _line_items(
    creations: int, opaque_verifications: int, prices: Prices
) -> tuple[LineItem, LineItem]:
    return (
        line_item("Token creations", creations, prices.free_creations, prices.creation),
        line_item(
            "Opaque verifications",
            opaque_verifications,
            prices.free_verifications,
            prices.verification,
        ),
    )


def format_usd(amount: Decimal) -> str:
    """Dollars with cents, or with enough digits to show a sub-cent unit price."""
    if amount == 0 or abs(amount) >= Decimal("0.01"):
        return f"${amount.quantize(Decimal('0.01')):,}"
    return f"${amount.normalize():f}"
