"""Server-side SVG bar charts: scale, stacking, accessibility text and escaping."""

import re
import xml.etree.ElementTree as ET

import pytest

from mock_issuer.dashboard.charts import (
    BarChart,
    Series,
    label_stride,
    nice_step,
    render_stacked_bars,
    y_ticks,
)

SVG = "{http://www.w3.org/2000/svg}"


def chart(**overrides) -> BarChart:
    fields = dict(
        chart_id="creations",
        title="Token creations",
        description="Creations per hour over the last day.",
        labels=("10:00", "11:00", "12:00"),
        series=(
            Series("opaque", (1, 0, 4), "#0072B2"),
            Series("jwt", (2, 0, 1), "#E69F00"),
            Series("failed", (0, 0, 3), "#D55E00", hatched=True),
        ),
    )
    fields.update(overrides)
    return BarChart(**fields)


def parse(markup) -> ET.Element:
    return ET.fromstring(str(markup))  # noqa: S314 (our own output, not untrusted input)


@pytest.mark.parametrize(
    ("raw", "step"),
    [(0.3, 1), (1, 1), (1.2, 2), (3, 5), (7, 10), (26, 50), (250, 500), (1001, 2000)],
)
def test_nice_step_rounds_up_to_1_2_5(raw, step):
    assert nice_step(raw) == step


def test_y_ticks_cover_the_peak_with_round_numbers():
    assert y_ticks(0) == [0, 1]
    assert y_ticks(8) == [0, 2, 4, 6, 8]
    assert y_ticks(9) == [0, 5, 10]
    assert y_ticks(123) == [0, 50, 100, 150]


def test_label_stride_limits_the_number_of_x_labels():
    assert label_stride(6) == 1
    assert label_stride(24) == 4
    assert label_stride(30) == 5


def test_svg_is_well_formed_and_labelled_for_screen_readers():
    svg = parse(render_stacked_bars(chart()))
    assert svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "creations-title creations-desc"
    assert svg.find(f"{SVG}title").text == "Token creations"
    desc = svg.find(f"{SVG}desc").text
    assert "Total 11: opaque 5, jwt 3, failed 3." in desc
    assert "Busiest: 8 at 12:00." in desc


def test_bars_stack_and_their_heights_are_proportional_to_the_counts():
    svg = parse(render_stacked_bars(chart()))
    bars = [r for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    titles = [r.find(f"{SVG}title").text for r in bars]
    # Zero-height bars are not drawn.
    assert titles == [
        "10:00: opaque 1",
        "10:00: jwt 2",
        "12:00: opaque 4",
        "12:00: jwt 1",
        "12:00: failed 3",
    ]
    heights = [float(r.get("height")) for r in bars]
    assert heights[2] == pytest.approx(4 * heights[0], rel=0.02)
    # The 12:00 column stacks: each layer starts where the one below ends.
    opaque, jwt, failed = bars[2:]
    assert float(jwt.get("y")) + float(jwt.get("height")) == pytest.approx(float(opaque.get("y")))
    assert float(failed.get("y")) + float(failed.get("height")) == pytest.approx(
        float(jwt.get("y"))
    )
    assert failed.get("fill") == "url(#creations-hatch)"


def test_an_empty_chart_says_so():
    empty = chart(series=(Series("opaque", (0, 0, 0), "#0072B2"),))
    markup = str(render_stacked_bars(empty))
    assert "No events in this range" in markup
    assert "No events in this range." in parse(markup).find(f"{SVG}desc").text


def test_names_are_escaped():
    hostile = chart(
        title="<script>x</script>",
        series=(Series('a"><script>', (1, 1, 1), "#0072B2"),),
    )
    markup = str(render_stacked_bars(hostile))
    assert "<script>" not in markup
    parse(markup)  # still well-formed


def test_long_ranges_show_a_bounded_number_of_x_labels():
    labels = tuple(f"d{i}" for i in range(30))
    markup = str(
        render_stacked_bars(chart(labels=labels, series=(Series("s", (1,) * 30, "#000"),)))
    )
    shown = re.findall(r">(d\d+)</text>", markup)
    assert 2 <= len(shown) <= 6
    assert shown[-1] == "d29"


def test_series_must_have_one_value_per_bucket():
    with pytest.raises(ValueError, match="3 buckets"):
        chart(series=(Series("opaque", (1, 2), "#0072B2"),))
