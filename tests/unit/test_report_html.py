"""The HTML data-quality report: content, escaping, offline safety and odd reports."""

from __future__ import annotations

import copy
import html
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from prepflow.processing.report_html import (
    DASH,
    MAX_MISSING_CHART_COLUMNS,
    format_number,
    render_html,
)

HOSTILE = "<script>alert(\"x\")</script>' onmouseover='alert(1)"
QUOTE_BREAKER = 'name" onload="alert(2)'

# Elements that have no end tag in HTML.
VOID_ELEMENTS = {"meta", "link", "br", "hr", "img", "input", "col", "wbr"}
# Attributes through which a browser fetches or navigates.
URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "srcset", "poster", "data"}


def sample_report() -> dict[str, Any]:
    return {
        "job_name": "prepflow-employees-4d927f6f3f81",
        "generated_at": "2026-12-04T22:00:00.000000Z",
        "rows": {"in": 20000, "out": 19010, "rejected": 990, "removed": 0},
        "sources": [
            {
                "file": "mock_data.csv",
                "format": "csv",
                "encoding": "utf-8",
                "compression": None,
                "rows_in": 20000,
                "rows_rejected": 990,
            }
        ],
        "steps": [
            {
                "index": 1,
                "step": "impute",
                "description": "impute age, salary, bonus by median",
                "rows_in": 19010,
                "rows_out": 19010,
                "removed": 0,
            }
        ],
        "rejected": {
            "total": 990,
            "by_reason": {"invalid float": 12, "too many fields": 3},
            "location": "rejected/prepflow-employees-4d927f6f3f81/",
        },
        "columns": [
            {
                "name": "age",
                "type": "float",
                "missing_before": 2000,
                "missing_after": 0,
                "min": 18.0,
                "max": 80.0,
                "mean": 49.2,
                "std": 17.1,
                "quantiles": {"0.05": 21.0, "0.25": 33.0, "0.5": 49.0, "0.75": 65.0, "0.95": 77.0},
                "distinct": 63,
                "distinct_exact": True,
                "top_values": [{"value": "49.0", "count": 2400}],
                "histogram": {
                    "edges": [18.0, 24.2, 30.4, 36.6, 42.8, 49.0],
                    "counts": [300, 412, 520, 610, 17168],
                },
            },
            {
                "name": "department",
                "type": "string",
                "missing_before": 1234,
                "missing_after": 56,
                "min": "Accounting",
                "max": "Training",
                "mean": None,
                "std": None,
                "quantiles": None,
                "distinct": 12000,
                "distinct_exact": False,
                "top_values": [
                    {"value": "Engineering", "count": 4100},
                    {"value": "Sales", "count": 3900},
                    {"value": None, "count": 56},
                ],
                "histogram": None,
            },
            {
                "name": "salary_band",
                "type": "string",
                "missing_before": None,
                "missing_after": 7,
                "min": "high",
                "max": "low",
                "distinct": 3,
                "distinct_exact": True,
                "top_values": [{"value": "mid", "count": 9000}],
                "histogram": None,
            },
            {
                "name": "id",
                "type": "int",
                "missing_before": 0,
                "missing_after": 0,
                "min": 1,
                "max": 20000,
                "mean": 10000.5,
                "std": 5773.6,
                "quantiles": {"0.5": 10000.5},
                "distinct": 19010,
                "distinct_exact": True,
                "top_values": [],
                "histogram": {"edges": [1.0, 10000.5, 20000.0], "counts": [9505, 9505]},
            },
        ],
        "outputs": [
            {"name": "train", "path": "train.parquet", "rows": 15208},
            {"name": "test", "path": "test.parquet", "rows": 3802},
        ],
        "recipe": {"steps": [{"impute": {"columns": ["age"], "strategy": "median"}}]},
        "fitted": {"impute": {"age": {"median": 49.0}}},
        "notes": ["quantiles and histograms are estimated from a uniform sample of 100,000 rows"],
    }


def zero_row_report() -> dict[str, Any]:
    column = {
        "name": "age",
        "type": "float",
        "missing_before": 0,
        "missing_after": 0,
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "quantiles": None,
        "distinct": 0,
        "distinct_exact": True,
        "top_values": [],
        "histogram": None,
    }
    return {
        "job_name": "prepflow-empty-000000000000",
        "generated_at": "2026-12-04T22:00:00.000000Z",
        "rows": {"in": 0, "out": 0, "rejected": 0, "removed": 0},
        "sources": [{"file": "header_only.csv", "format": "csv", "rows_in": 0, "rows_rejected": 0}],
        "steps": [{"index": 1, "step": "impute", "description": "", "rows_in": 0, "rows_out": 0}],
        "rejected": {"total": 0, "by_reason": {}, "location": None},
        "columns": [column, {**column, "name": "name", "type": "string"}],
        "outputs": [{"name": "train", "path": "train.parquet", "rows": 0}],
        "recipe": {},
        "fitted": {},
        "notes": [],
    }


class TagChecker(HTMLParser):
    """Record every tag with its attributes and every end tag that does not match its start."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open_tags: list[str] = []
        self.mismatches: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID_ELEMENTS:
            self.open_tags.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if self.open_tags and self.open_tags[-1] == tag:
            self.open_tags.pop()
        else:
            self.mismatches.append(f"</{tag}> while open: {self.open_tags[-3:]}")


def parse(markup: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(markup)
    checker.close()
    return checker


def svg_by_id(page: str, chart_id: str) -> str:
    match = re.search(rf'<svg[^>]*\bid="{re.escape(chart_id)}".*?</svg>', page, re.DOTALL)
    assert match is not None, f"no <svg id={chart_id!r}> in the page"
    return match.group(0)


def histogram_report(counts: list[int], edges: list[float]) -> dict[str, Any]:
    return {
        "columns": [{"name": "x", "type": "float", "histogram": {"edges": edges, "counts": counts}}]
    }


def test_render_sample_report() -> None:
    page = render_html(sample_report())

    assert page.startswith("<!DOCTYPE html>")
    assert '<html lang="en">' in page
    assert "<title>Data-quality report: prepflow-employees-4d927f6f3f81</title>" in page
    assert "2026-12-04T22:00:00.000000Z" in page
    for anchor in ("summary", "sources", "steps", "rejected", "missing", "columns", "outputs"):
        assert f'<section id="{anchor}"' in page
    for anchor in ("recipe", "fitted", "notes"):
        assert f'<section id="{anchor}"' in page
    for number in ("20,000", "19,010", "990", "15,208", "3,802", "17,168"):
        assert number in page
    assert "mock_data.csv" in page
    assert "impute age, salary, bonus by median" in page
    assert "invalid float" in page
    assert "train.parquet" in page
    assert "uniform sample of 100,000 rows" in page


def test_render_sample_details() -> None:
    page = render_html(sample_report())

    assert "≈12,000 (estimate)" in page
    assert "created by the steps" in page
    assert "Quantile 0.95" in page
    assert "Engineering" in page
    assert "<em>null</em>" in page
    assert "<pre>" in page
    assert page.index("invalid float") < page.index("too many fields")


def test_recipe_and_fitted_as_json() -> None:
    report = sample_report()
    page = render_html(report)

    blocks = re.findall(r"<pre>(.*?)</pre>", page, re.DOTALL)
    assert len(blocks) == 2
    assert json.loads(html.unescape(blocks[0])) == report["recipe"]
    assert json.loads(html.unescape(blocks[1])) == report["fitted"]
    assert '\n  "steps": [' in html.unescape(blocks[0])


def test_tables_have_header_scope() -> None:
    checker = parse(render_html(sample_report()))

    header_cells = [attrs for tag, attrs in checker.tags if tag == "th"]
    assert header_cells
    assert all(attrs.get("scope") in {"col", "row"} for attrs in header_cells)


def test_every_svg_has_title() -> None:
    page = render_html(sample_report())

    charts = re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)
    assert len(charts) == 4  # rows, missing values, two histograms
    for chart in charts:
        assert re.match(r"<svg[^>]*>\s*<title\b", chart), chart[:200]
        assert 'role="img"' in chart


def test_escape_hostile_strings() -> None:
    report = sample_report()
    report["job_name"] = HOSTILE
    report["sources"][0]["file"] = HOSTILE
    report["steps"][0]["description"] = HOSTILE
    report["rejected"]["by_reason"] = {HOSTILE: 5}
    report["columns"][0]["name"] = HOSTILE
    report["columns"][1]["name"] = QUOTE_BREAKER
    report["columns"][1]["top_values"] = [{"value": HOSTILE, "count": 9}]
    report["columns"][1]["min"] = HOSTILE
    report["outputs"][0]["path"] = QUOTE_BREAKER
    report["recipe"] = {HOSTILE: [HOSTILE], "</pre><script>": 1}
    report["fitted"] = {"x": QUOTE_BREAKER}
    report["notes"] = [HOSTILE]

    page = render_html(report)
    checker = parse(page)

    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "&lt;/pre&gt;&lt;script&gt;" in page
    assert "name&quot; onload=&quot;alert(2)" in page
    assert all(tag != "script" for tag, _ in checker.tags)
    for tag, attrs in checker.tags:
        handlers = [name for name in attrs if name.startswith("on")]
        assert handlers == [], f"<{tag}> has event handler attributes {handlers}"
    assert checker.mismatches == []


def test_no_external_references() -> None:
    report = sample_report()
    report["sources"][0]["file"] = "https://cdn.example.com/data.csv"
    report["columns"][1]["top_values"] = [{"value": '<img src="//evil.example/p.png">', "count": 1}]
    report["notes"] = ['<a href="http://evil.example/">click</a>']

    page = render_html(report)
    checker = parse(page)

    for tag, attrs in checker.tags:
        for name, value in attrs.items():
            if name in URL_ATTRIBUTES:
                assert value is not None
                assert value.startswith("#"), f"<{tag} {name}={value!r}> leaves the page"
            assert "url(" not in (value or "") or "url(#" in (value or "")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"@import|@font-face", page)
    assert "default-src 'none'" in page


def test_zero_row_report() -> None:
    page = render_html(zero_row_report())
    checker = parse(page)

    assert "no rows" in page
    assert "No column has missing values." in page
    assert "No rows were rejected." in page
    assert "NaN" not in page
    assert "histogram-" not in page
    assert "(0.0%)" in page
    assert checker.mismatches == []
    assert checker.open_tags == []


def test_histogram_all_zero_counts() -> None:
    page = render_html(histogram_report([0, 0, 0], [0.0, 1.0, 2.0, 3.0]))
    chart = svg_by_id(page, "histogram-1")

    bars = [
        attrs for tag, attrs in parse(chart).tags if tag == "rect" and attrs.get("class") == "bar"
    ]
    assert len(bars) == 3
    assert all(attrs["height"] == "0.00" for attrs in bars)


def test_empty_report() -> None:
    page = render_html({})

    assert "<title>Data-quality report</title>" in page
    assert "<section" not in page
    assert "<nav" not in page
    assert f"Job: <strong>{DASH}</strong>" in page
    assert f"Generated: {DASH}" in page


@pytest.mark.parametrize(
    ("key", "anchor"),
    [
        ("rows", "summary"),
        ("sources", "sources"),
        ("steps", "steps"),
        ("rejected", "rejected"),
        ("columns", "columns"),
        ("outputs", "outputs"),
        ("recipe", "recipe"),
        ("fitted", "fitted"),
        ("notes", "notes"),
    ],
)
def test_missing_section_skipped(key: str, anchor: str) -> None:
    report = sample_report()
    del report[key]
    null_report = sample_report()
    null_report[key] = None

    for page in (render_html(report), render_html(null_report)):
        assert f'<section id="{anchor}"' not in page
        assert f'href="#{anchor}"' not in page
        assert '<section id="summary"' in page or key == "rows"


def test_missing_fields_render_dash() -> None:
    report = {
        "rows": {"in": 10},
        "sources": [{}],
        "steps": [{"step": "drop"}],
        "rejected": {},
        "columns": [{}, {"name": "only_name"}],
        "outputs": [{"name": "train"}],
    }

    page = render_html(report)
    checker = parse(page)

    assert "only_name" in page
    assert "Rows out, rejected and removed add up to 0, not the 10 rows read." in page
    assert page.count(f"<td>{DASH}</td>") >= 5
    assert checker.mismatches == []


def test_wrong_types_are_ignored() -> None:
    report: dict[str, Any] = {
        "rows": "many",
        "sources": "mock_data.csv",
        "columns": [5, {"name": "x", "histogram": {"edges": ["a", "b", "c"], "counts": [1, 2]}}],
        "rejected": {"by_reason": ["invalid float"]},
    }

    page = render_html(report)

    assert "Histogram not shown: its edges and counts must all be numbers." in page
    assert "The report lists no source files." in page


def test_missing_chart_has_column_numbers() -> None:
    page = render_html(sample_report())
    chart = svg_by_id(page, "missing-chart")

    for number in ("2,000", "0", "1,234", "56", "7"):
        assert f">{number}</text>" in chart
    assert ">created</text>" in chart
    for name in ("age", "department", "salary_band"):
        assert f"<title>{name}</title>" in chart
    assert "<title>id</title>" not in chart
    assert "1 more column has no missing values" in page


def test_missing_chart_labels_without_colour() -> None:
    chart = svg_by_id(render_html(sample_report()), "missing-chart")

    assert chart.count(">before</text>") == 3
    assert chart.count(">after</text>") == 3
    assert 'fill="url(#missing-hatch)"' in chart
    assert '<pattern id="missing-hatch"' in chart


def test_missing_chart_removed_column() -> None:
    report = sample_report()
    report["columns"][0]["missing_after"] = None

    chart = svg_by_id(render_html(report), "missing-chart")

    assert ">removed</text>" in chart
    assert ">2,000</text>" in chart


def test_histogram_bar_count_matches() -> None:
    report = sample_report()
    page = render_html(report)

    for index, column in enumerate(report["columns"], start=1):
        if column["histogram"] is None:
            assert f'id="histogram-{index}"' not in page
            continue
        chart = svg_by_id(page, f"histogram-{index}")
        bars = [
            tag for tag, attrs in parse(chart).tags if tag == "rect" and attrs.get("class") == "bar"
        ]
        assert len(bars) == len(column["histogram"]["counts"])


@pytest.mark.parametrize(
    ("counts", "edges", "problem"),
    [
        ([1, 2, 3], [0.0, 1.0], "it has 2 edges for 3 counts"),
        ([], [0.0], "it has no bins"),
        ([1, 2], [0.0, float("nan"), 2.0], "its edges must all be finite"),
        ([1, 2], [0.0, 3.0, 2.0], "its edges must not decrease"),
        ([1, "2"], [0.0, 1.0, 2.0], "its edges and counts must all be numbers"),
    ],
)
def test_histogram_invalid_shape(counts: list[Any], edges: list[float], problem: str) -> None:
    report = histogram_report(counts, edges)
    report["columns"][0]["top_values"] = [{"value": "a", "count": 3}]

    page = render_html(report)

    assert f"Histogram not shown: {problem}." in page
    assert "histogram-1" not in page
    assert "Most frequent values" in page


def test_histogram_bars_follow_edges() -> None:
    page = render_html(histogram_report([5, 5, -1], [0.0, 1.0, 4.0, 5.0]))
    chart = svg_by_id(page, "histogram-1")

    bars = [
        attrs for tag, attrs in parse(chart).tags if tag == "rect" and attrs.get("class") == "bar"
    ]
    widths = [float(attrs["width"] or 0) for attrs in bars]
    heights = [float(attrs["height"] or 0) for attrs in bars]
    assert widths[1] > 2.5 * widths[0]
    assert heights[0] == heights[1] > 0
    assert heights[2] == 0


def test_svg_and_tags_balanced() -> None:
    page = render_html(sample_report())
    checker = parse(page)

    assert checker.mismatches == []
    assert checker.open_tags == []
    svg_starts = sum(1 for tag, _ in checker.tags if tag == "svg")
    assert svg_starts == page.count("</svg>")
    assert svg_starts == 4


def test_many_columns() -> None:
    report = sample_report()
    template = report["columns"][1]
    report["columns"] = [
        {**copy.deepcopy(template), "name": f"column_{index:03d}", "missing_before": index}
        for index in range(1, 401)
    ]

    page = render_html(report)
    chart = svg_by_id(page, "missing-chart")
    checker = parse(page)

    assert chart.count("<g>") == MAX_MISSING_CHART_COLUMNS
    assert "<title>column_400</title>" in chart
    assert "<title>column_001</title>" not in chart
    assert f"{400 - MAX_MISSING_CHART_COLUMNS} more columns with missing values" in page
    assert 'id="column-400"' in page
    assert len(page.encode()) < 2_000_000
    assert checker.mismatches == []


def test_top_values_capped() -> None:
    report = sample_report()
    report["columns"][1]["top_values"] = [
        {"value": f"v{index}", "count": 100 - index} for index in range(25)
    ]

    page = render_html(report)

    assert "(the first 10 of 25)" in page
    assert ">v9<" in page
    assert ">v10<" not in page


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (20000, "20,000"),
        (0, "0"),
        (18.0, "18"),
        (49.2, "49.2"),
        (-3.14159, "-3.142"),
        (1234.5678, "1,235"),
        (12345.678, "12,346"),
        (0.000123456, "0.0001235"),
        (1e20, "1e+20"),
        (float("nan"), "NaN"),
        (float("-inf"), "-∞"),
    ],
)
def test_format_number(value: float, expected: str) -> None:
    assert format_number(value) == expected
