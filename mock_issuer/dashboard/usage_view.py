"""Turn the issuer's usage reports (`usage.usage_report`, the same data as `GET /v1/usage`)
into what the usage page shows: two stacked bar charts, totals and breakdown tables.

Pure functions of report dictionaries, so they are tested without a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..usage import DEFAULT_BUCKETS, FORMATS
from ..usage import RANGES as REPORT_RANGES
from .charts import FAILED_COLOR, PALETTE, BarChart, Series


@dataclass(frozen=True)
class TimeRange:
    """A range the page offers: the report's range name, and the bucket size charted."""

    key: str
    label: str
    bucket_seconds: int
    label_format: str


# The report's buckets, except that the last hour is charted in 5-minute bars rather than the
# API's 1-minute buckets: 12 bars stay readable at phone width, 60 would be slivers.
CHART_BUCKET_SECONDS = {**DEFAULT_BUCKETS, "hour": 300}
_LABELS = {  # range name: (tab label, bucket label format)
    "hour": ("Last hour", "%H:%M"),
    "day": ("Last 24 hours", "%H:%M"),
    "30d": ("Last 30 days", "%b %d"),
}
RANGES = {
    key: TimeRange(key, _LABELS[key][0], CHART_BUCKET_SECONDS[key], _LABELS[key][1])
    for key in REPORT_RANGES
}
SPLITS = {"format": "Token format", "machine": "Machine"}
TOP_MACHINES = 5  # charted one by one; the rest are added up as "other machines"
UNKNOWN_MACHINE = "unknown token"


@dataclass(frozen=True)
class Totals:
    creations: int
    reuses: int
    verifications_ok: int
    verifications_failed: int


@dataclass(frozen=True)
class BreakdownRow:
    label: str
    creations: int
    verifications_ok: int
    verifications_failed: int


@dataclass(frozen=True)
class UsageCharts:
    creations: BarChart
    verifications: BarChart


def bucket_labels(report: Mapping[str, Any], time_range: TimeRange) -> tuple[str, ...]:
    """The UTC start time of each bucket, formatted for the range."""
    return tuple(
        datetime.fromtimestamp(b["start"] / 1000, UTC).strftime(time_range.label_format)
        for b in report["buckets"]
    )


def _creations(counts: Mapping[str, Any], fmt: str | None = None) -> int:
    return counts["creations"]["total"] if fmt is None else counts["creations"].get(fmt, 0)


def _verified(counts: Mapping[str, Any], outcome: str, fmt: str | None = None) -> int:
    formats = FORMATS if fmt is None else (fmt,)
    return sum(counts["verifications"][f][outcome] for f in formats)


def totals_of(counts: Mapping[str, Any]) -> Totals:
    return Totals(
        creations=_creations(counts),
        reuses=counts["reuses"]["total"],
        verifications_ok=_verified(counts, "ok"),
        verifications_failed=_verified(counts, "failed"),
    )


def _per_bucket(report: Mapping[str, Any], count) -> tuple[int, ...]:
    return tuple(count(b) for b in report["buckets"])


def _failed_series(report: Mapping[str, Any]) -> Series:
    return Series(
        "failed", _per_bucket(report, lambda b: _verified(b, "failed")), FAILED_COLOR, True
    )


def format_breakdown(report: Mapping[str, Any]) -> list[BreakdownRow]:
    """Totals of the range per token format."""
    totals = report["totals"]
    return [
        BreakdownRow(
            f, _creations(totals, f), _verified(totals, "ok", f), _verified(totals, "failed", f)
        )
        for f in FORMATS
    ]


def machine_breakdown(report: Mapping[str, Any], names: Mapping[str, str]) -> list[BreakdownRow]:
    """Totals of the range per subject machine, by name; failures of unknown tokens last."""
    rows = [
        BreakdownRow(
            names.get(m["machine_id"], m["machine_id"]) if m["machine_id"] else UNKNOWN_MACHINE,
            _creations(m),
            _verified(m, "ok"),
            _verified(m, "failed"),
        )
        for m in report["machines"]
    ]
    return sorted(rows, key=lambda r: (r.label == UNKNOWN_MACHINE, r.label))


def by_format(report: Mapping[str, Any], time_range: TimeRange) -> UsageCharts:
    """Charts stacked by token format, failed verifications as their own hatched layer."""
    labels = bucket_labels(report, time_range)
    colors = dict(zip(FORMATS, PALETTE, strict=False))
    creations = tuple(
        Series(f, _per_bucket(report, lambda b, f=f: _creations(b, f)), colors[f]) for f in FORMATS
    )
    verified = tuple(
        Series(f"{f} ok", _per_bucket(report, lambda b, f=f: _verified(b, "ok", f)), colors[f])
        for f in FORMATS
    )
    return UsageCharts(
        creations=_chart(
            "creations", "Token creations", "token format", time_range, labels, creations
        ),
        verifications=_chart(
            "verifications",
            "Token verifications",
            "token format",
            time_range,
            labels,
            (*verified, _failed_series(report)),
        ),
    )


def top_machine_ids(report: Mapping[str, Any], limit: int = TOP_MACHINES) -> list[str]:
    """The busiest known machines of the report (creations plus verifications), busiest first."""
    ranked = sorted(
        (m for m in report["machines"] if m["machine_id"]),
        key=lambda m: (-(_creations(m) + m["verifications"]["total"]), m["machine_id"]),
    )
    return [m["machine_id"] for m in ranked[:limit]]


def by_machine(
    report: Mapping[str, Any],
    machine_reports: Sequence[Mapping[str, Any]],
    names: Mapping[str, str],
    time_range: TimeRange,
) -> UsageCharts:
    """Charts stacked by machine: one layer per report in `machine_reports` (the same range
    filtered to one machine), the rest of the traffic as "other machines", failures apart."""
    labels = bucket_labels(report, time_range)
    creations: list[Series] = []
    verified: list[Series] = []
    for i, machine_report in enumerate(machine_reports):
        name = names.get(machine_report["machine_id"], machine_report["machine_id"])
        color = PALETTE[i % (len(PALETTE) - 1)]
        creations.append(Series(name, _per_bucket(machine_report, _creations), color))
        verified.append(
            Series(name, _per_bucket(machine_report, lambda b: _verified(b, "ok")), color)
        )
    other_creations = _remainder(report, machine_reports, _creations)
    other_verified = _remainder(report, machine_reports, lambda b: _verified(b, "ok"))
    if any(other_creations) or any(other_verified):
        creations.append(Series("other machines", other_creations, PALETTE[-1]))
        verified.append(Series("other machines", other_verified, PALETTE[-1]))
    verified.append(_failed_series(report))
    return UsageCharts(
        creations=_chart(
            "creations", "Token creations", "machine", time_range, labels, tuple(creations)
        ),
        verifications=_chart(
            "verifications", "Token verifications", "machine", time_range, labels, tuple(verified)
        ),
    )


def _remainder(report, machine_reports, count) -> tuple[int, ...]:
    whole = _per_bucket(report, count)
    parts = [_per_bucket(r, count) for r in machine_reports]
    return tuple(w - sum(p[i] for p in parts) for i, w in enumerate(whole))


def _chart(chart_id, title, split_name, time_range, labels, series) -> BarChart:
    unit = {300: "5 minutes", 3600: "hour", 86_400: "day"}.get(
        time_range.bucket_seconds, f"{time_range.bucket_seconds} seconds"
    )
    return BarChart(
        chart_id=chart_id,
        title=f"{title}, {time_range.label.lower()}",
        description=f"{title} per {unit} (UTC), stacked by {split_name}.",
        labels=labels,
        series=series,
    )
