"""Usage reports (the `usage.usage_report` shape) turned into chart series and tables."""

from mock_issuer.dashboard.usage_view import (
    RANGES,
    UNKNOWN_MACHINE,
    by_format,
    by_machine,
    machine_breakdown,
    top_machine_ids,
)

HOUR = RANGES["hour"]
START = 1_780_000_200_000  # a multiple of 5 minutes


def counts(create_opaque=0, create_jwt=0, ok=0, failed=0) -> dict:
    return {
        "creations": {
            "opaque": create_opaque,
            "jwt": create_jwt,
            "total": create_opaque + create_jwt,
        },
        "reuses": {"opaque": 0, "total": 0},
        "verifications": {
            "opaque": {"ok": ok, "failed": failed},
            "jwt": {"ok": 0, "failed": 0},
            "total": ok + failed,
        },
    }


def report(per_bucket: list[dict], machines: list[tuple[str | None, dict]], machine_id=None):
    total = counts(
        sum(b["creations"]["opaque"] for b in per_bucket),
        sum(b["creations"]["jwt"] for b in per_bucket),
        sum(b["verifications"]["opaque"]["ok"] for b in per_bucket),
        sum(b["verifications"]["opaque"]["failed"] for b in per_bucket),
    )
    buckets = [
        {"start": START + i * 300_000, "end": START + (i + 1) * 300_000, **b}
        for i, b in enumerate(per_bucket)
    ]
    return {
        "buckets": buckets,
        "totals": total,
        "machine_id": machine_id,
        "machines": [{"machine_id": mid, **c} for mid, c in machines],
    }


def test_format_split_has_a_layer_per_format_and_failures_apart():
    r = report([counts(2, 1, ok=3, failed=1), counts()], [("mch_a", counts(2, 1, 3, 1))])
    charts = by_format(r, HOUR)
    assert [(s.name, s.values) for s in charts.creations.series] == [
        ("opaque", (2, 0)),
        ("jwt", (1, 0)),
    ]
    failed = charts.verifications.series[-1]
    assert (failed.name, failed.values, failed.hatched) == ("failed", (1, 0), True)
    assert charts.creations.labels == ("20:30", "20:35")


def test_machine_split_charts_the_busiest_and_adds_up_the_rest():
    machines = [(f"mch_{i}", counts(create_opaque=i)) for i in range(1, 8)]
    whole = report([counts(create_opaque=28, failed=2)], machines)
    top = top_machine_ids(whole, limit=2)
    assert top == ["mch_7", "mch_6"]
    per_machine = [
        report([counts(create_opaque=7)], [], "mch_7"),
        report([counts(create_opaque=6)], [], "mch_6"),
    ]
    charts = by_machine(whole, per_machine, {"mch_7": "seven"}, HOUR)
    assert [(s.name, s.values) for s in charts.creations.series] == [
        ("seven", (7,)),
        ("mch_6", (6,)),
        ("other machines", (15,)),
    ]
    assert charts.verifications.series[-1].values == (2,)
    assert sum(charts.creations.bucket_totals) == 28


def test_failures_of_unknown_tokens_are_listed_last():
    r = report([counts()], [(None, counts(failed=2)), ("mch_b", counts(1)), ("mch_a", counts(1))])
    rows = machine_breakdown(r, {"mch_a": "alpha", "mch_b": "beta"})
    assert [(row.label, row.verifications_failed) for row in rows] == [
        ("alpha", 0),
        ("beta", 0),
        (UNKNOWN_MACHINE, 2),
    ]
