"""The cost estimate: free tiers, unit prices from settings, month-to-date, and the projection
from the trailing 30 days."""

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from mock_issuer.config import DEFAULTS, ConfigError, load_settings
from mock_issuer.dashboard.pricing import (
    CLERK_PRICES,
    Prices,
    days_in_month,
    estimate,
    format_usd,
    month_bounds,
)

MID_JUNE = datetime(2026, 6, 16, 0, 0, tzinfo=UTC)  # a 30-day month


def settings_prices(**env: str) -> Prices:
    return Prices.of(load_settings({"CLERK_SECRET_KEY": "sk_test_x", **env}))


def test_defaults_are_the_reference_prices():
    prices = settings_prices()
    assert prices == CLERK_PRICES
    assert prices.creation == Decimal("0.001")
    assert prices.verification == Decimal("0.00001")
    assert (prices.free_creations, prices.free_verifications) == (2500, 100_000)


def test_usage_inside_the_free_tiers_costs_nothing():
    result = estimate((2500, 100_000), (2500, 100_000), CLERK_PRICES, MID_JUNE)
    assert result.month_to_date_total == 0
    creations, verifications = result.month_to_date
    assert (creations.free, creations.billable) == (2500, 0)
    assert (verifications.free, verifications.billable) == (100_000, 0)


def test_only_usage_above_the_free_tier_is_billed():
    result = estimate((3500, 150_000), (3500, 150_000), CLERK_PRICES, MID_JUNE)
    creations, verifications = result.month_to_date
    assert creations.billable == 1000 and creations.cost == Decimal("1.000")
    assert verifications.billable == 50_000 and verifications.cost == Decimal("0.50000")
    assert result.month_to_date_total == Decimal("1.5")


def test_projection_is_the_trailing_30_days_scaled_to_the_days_of_the_month():
    result = estimate((2000, 60_000), (4000, 120_000), CLERK_PRICES, MID_JUNE)
    creations, verifications = result.projected
    assert (creations.count, verifications.count) == (4000, 120_000)  # June: 30 days
    assert result.projected_total == Decimal("1.5") + Decimal("0.2")
    assert result.month_to_date_total == 0
    july = estimate((0, 0), (3000, 0), CLERK_PRICES, datetime(2026, 7, 20, tzinfo=UTC))
    assert july.projected[0].count == 3100  # 31 days


def test_projection_early_in_the_month_is_not_blown_up_by_a_few_events():
    one_minute_in = datetime(2026, 7, 1, 0, 1, tzinfo=UTC)
    result = estimate((10, 10), (10, 10), CLERK_PRICES, one_minute_in)
    assert result.projected[0].count == 10  # 10 x 31/30, not 10 x 44640 minutes
    assert result.projected_total == 0


def test_prices_come_from_settings():
    prices = settings_prices(
        MOCK_ISSUER_PRICE_VERIFICATION="0.0001", MOCK_ISSUER_FREE_CREATIONS="0"
    )
    result = estimate((10, 100_010), (10, 100_010), prices, MID_JUNE)
    creations, verifications = result.month_to_date
    assert creations.cost == Decimal("0.010")
    assert verifications.cost == Decimal("0.0010")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MOCK_ISSUER_PRICE_CREATION", "one dollar"),
        ("MOCK_ISSUER_PRICE_CREATION", "-0.1"),
        ("MOCK_ISSUER_PRICE_VERIFICATION", "NaN"),
        ("MOCK_ISSUER_FREE_VERIFICATIONS", "1.5"),
        ("MOCK_ISSUER_FREE_CREATIONS", "-1"),
    ],
)
def test_a_malformed_price_setting_is_rejected_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        settings_prices(**{name: value})


def test_month_bounds_handle_december_and_february():
    assert month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))[1] == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    start, end = month_bounds(datetime(2028, 2, 10, tzinfo=UTC))
    assert (end - start).days == 29


def test_days_in_month():
    assert [days_in_month(datetime(2028, m, 5, tzinfo=UTC)) for m in (1, 2, 4, 12)] == [
        31,
        29,
        30,
        31,
    ]


@pytest.mark.parametrize(
    ("amount", "text"),
    [("0", "$0.00"), ("1234.5", "$1,234.50"), ("0.00001", "$0.00001"), ("0.001", "$0.001")],
)
def test_format_usd(amount, text):
    assert format_usd(Decimal(amount)) == text


def test_env_example_documents_every_dashboard_setting_with_its_default():
    text = (Path(__file__).parent.parent / "mock_issuer" / ".env.example").read_text()
    documented = dict(re.findall(r"^# (MOCK_ISSUER_\w+)=(.*)$", text, re.M))
    for name in ("PRICE_CREATION", "PRICE_VERIFICATION", "FREE_CREATIONS", "FREE_VERIFICATIONS"):
        default = getattr(DEFAULTS, f"mock_issuer_{name.lower()}")
        assert documented[f"MOCK_ISSUER_{name}"] == str(default)
    assert documented["MOCK_ISSUER_SESSION_SECRET"] == ""
