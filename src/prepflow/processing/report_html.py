"""Render a preprocessing job's data-quality report as one self-contained HTML page.

The page needs no network and no JavaScript. Styles sit in a ``<style>`` element, charts are
inline SVG, and a Content-Security-Policy meta tag forbids the browser to fetch anything or run
any script. Every value taken from the report is user data (column names, values, file names,
the recipe), so each one passes through ``html.escape`` before it reaches the page.

Any field of the report may be null or missing, as in reports written by older versions. A
missing value shows as an en dash and a missing section is left out.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, TypeGuard

DASH = "\u2013"  # en dash, shown for a missing value

# Limits that keep the page readable and small when a report has hundreds of columns.
MAX_MISSING_CHART_COLUMNS = 60
MAX_TOP_VALUES = 10
MAX_LABEL_CHARS = 26
MAX_VALUE_CHARS = 120

# Forbids every fetch and every script, but allows the inline <style> element and style
# attributes. Fragment references such as fill="url(#hatch)" are not fetches.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"

STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
  max-width: 60rem; padding: 1rem 1.5rem 3rem; color: #1a202c; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #cbd5e0; padding-bottom: 0.2rem; margin-top: 2.5rem; }
h3 { margin-top: 2rem; }
.meta, .note { color: #4a5568; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4rem 1rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.92rem; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
th, td { border: 1px solid #e2e8f0; padding: 0.25rem 0.6rem; text-align: left;
  vertical-align: top; }
thead th { background: #edf2f7; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.type { font-weight: normal; color: #4a5568; font-size: 0.85em; }
.column { display: flex; flex-wrap: wrap; gap: 1rem 2rem; align-items: flex-start; }
.bar-track { display: block; width: 12rem; background: #edf2f7; }
.bar { display: block; height: 0.8rem; background: #2b6cb0; }
svg.chart { max-width: 100%; height: auto; font-size: 12px; }
svg.chart text { fill: #1a202c; }
pre { background: #f7fafc; border: 1px solid #e2e8f0; padding: 0.8rem; overflow-x: auto;
  font-size: 0.85rem; }
@media print { nav { display: none; } }
"""

# Fills of the row-count chart and the missing-values chart. The hatched and dotted fills
# come from the patterns that pattern_defs declares, so the parts differ without colour too.
SOLID_FILL = "#2b6cb0"
HATCH_COLOURS = ("#fbd38d", "#9c4221")
DOT_COLOURS = ("#e2e8f0", "#2d3748")
# Layout of the 720-unit-wide missing-values chart: label, tag ("before"/"after"), bar, number.
MISSING_CHART_LABEL_END = 182
MISSING_CHART_TAG_X = 190
MISSING_CHART_BAR_X = 238
MISSING_CHART_BAR_MAX_WIDTH = 380
# Plot area of the 360 by 170 histogram. The text above and below it lies outside this area.
HISTOGRAM_LEFT = 10.0
HISTOGRAM_RIGHT = 350.0
HISTOGRAM_TOP = 24.0
HISTOGRAM_BOTTOM = 134.0
# Parts of the row-count bar: the key in report["rows"], the legend label and the fill kind.
ROW_PARTS = (
    ("out", "Rows out", "solid"),
    ("rejected", "Rejected", "hatch"),
    ("removed", "Removed", "dots"),
)


@dataclass(frozen=True)
class Section:
    """One top-level part of the page: its anchor id, its heading and its HTML body."""

    anchor: str
    heading: str
    body: str


def render_html(report: Mapping[str, Any]) -> str:
    """Render the report as a complete HTML5 document and return it as text."""
    builders = (
        summary_section,
        sources_section,
        steps_section,
        rejected_section,
        missing_section,
        columns_section,
        outputs_section,
        recipe_section,
        fitted_section,
        notes_section,
    )
    sections = [section for build in builders if (section := build(report)) is not None]

    parts = [header(report), navigation(sections)]
    for section in sections:
        parts.append(
            f'<section id="{section.anchor}" aria-labelledby="{section.anchor}-heading">'
            f'<h2 id="{section.anchor}-heading">{escape(section.heading)}</h2>'
            f"{section.body}</section>"
        )
    return document(page_title(report), "\n".join(parts))


def document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def page_title(report: Mapping[str, Any]) -> str:
    job_name = report.get("job_name")
    if job_name is None:
        return "Data-quality report"
    return f"Data-quality report: {format_value(job_name)}"


def header(report: Mapping[str, Any]) -> str:
    generated_at = report.get("generated_at")
    time_html = DASH
    if generated_at is not None:
        text = escape(format_value(generated_at))
        time_html = f'<time datetime="{text}">{text}</time>'
    return (
        "<header><h1>Data-quality report</h1>"
        f'<p class="meta">Job: <strong>{html_value(report.get("job_name"))}</strong>'
        f" · Generated: {time_html}</p></header>"
    )


def navigation(sections: Sequence[Section]) -> str:
    if not sections:
        return ""
    links = "".join(
        f'<li><a href="#{section.anchor}">{escape(section.heading)}</a></li>'
        for section in sections
    )
    return f'<nav aria-label="Sections"><ul>{links}</ul></nav>'


# --- Sections -------------------------------------------------------------------------------


def summary_section(report: Mapping[str, Any]) -> Section | None:
    if report.get("rows") is None:
        return None
    rows = as_mapping(report.get("rows"))
    labels = {"in": "In", "out": "Out", "rejected": "Rejected", "removed": "Removed"}
    table = html_table(
        ["Rows", "Count"],
        [[escape(label), html_value(rows.get(key))] for key, label in labels.items()],
        numeric={1},
    )

    body = [table, row_split_chart(rows)]
    rows_in = rows.get("in")
    accounted = sum(count_or_zero(rows.get(key)) for key in ("out", "rejected", "removed"))
    if is_number(rows_in) and accounted != rows_in:
        body.append(
            f'<p class="note">Rows out, rejected and removed add up to {format_number(accounted)}'
            f", not the {format_number(rows_in)} rows read.</p>"
        )
    return Section("summary", "Rows", "".join(body))


def sources_section(report: Mapping[str, Any]) -> Section | None:
    if report.get("sources") is None:
        return None
    sources = [as_mapping(item) for item in as_list(report.get("sources"))]
    if not sources:
        return Section("sources", "Sources", "<p>The report lists no source files.</p>")
    headers = ["File", "Format", "Encoding", "Compression", "Rows in", "Rows rejected"]
    keys = ["file", "format", "encoding", "compression", "rows_in", "rows_rejected"]
    rows = [[html_value(source.get(key)) for key in keys] for source in sources]
    return Section("sources", "Sources", html_table(headers, rows, numeric={4, 5}))


def steps_section(report: Mapping[str, Any]) -> Section | None:
    if report.get("steps") is None:
        return None
    steps = [as_mapping(item) for item in as_list(report.get("steps"))]
    if not steps:
        return Section("steps", "Steps", "<p>No steps ran.</p>")
    headers = ["#", "Step", "Description", "Rows in", "Rows out", "Removed"]
    keys = ["index", "step", "description", "rows_in", "rows_out", "removed"]
    rows = [[html_value(step.get(key)) for key in keys] for step in steps]
    return Section("steps", "Steps", html_table(headers, rows, numeric={0, 3, 4, 5}))


def rejected_section(report: Mapping[str, Any]) -> Section | None:
    if report.get("rejected") is None:
        return None
    rejected = as_mapping(report.get("rejected"))
    body = [f"<p>Rows rejected: <strong>{html_value(rejected.get('total'))}</strong>"]
    if rejected.get("location") is not None:
        body.append(f" · Stored at: <code>{html_value(rejected.get('location'))}</code>")
    body.append("</p>")

    reasons = sorted(
        as_mapping(rejected.get("by_reason")).items(),
        key=lambda item: count_or_zero(item[1]),
        reverse=True,
    )
    if reasons:
        rows = [[escape(str(reason)), html_value(count)] for reason, count in reasons]
        body.append(html_table(["Reason", "Rows"], rows, numeric={1}))
    elif count_or_zero(rejected.get("total")) == 0:
        body.append("<p>No rows were rejected.</p>")
    return Section("rejected", "Rejected rows", "".join(body))


def missing_section(report: Mapping[str, Any]) -> Section | None:
    if report.get("columns") is None:
        return None
    columns = column_list(report)
    charted = [column for column in columns if has_missing_values(column)]
    complete_count = len(columns) - len(charted)
    omitted_count = max(0, len(charted) - MAX_MISSING_CHART_COLUMNS)
    if omitted_count:
        charted = top_missing_columns(charted, MAX_MISSING_CHART_COLUMNS)

    body = []
    if charted:
        body.append(missing_values_chart(charted))
    else:
        body.append("<p>No column has missing values.</p>")
    if charted and complete_count:
        complete = count_phrase(complete_count, "more column has", "more columns have")
        body.append(f'<p class="note">{complete} no missing values.</p>')
    if omitted_count:
        body.append(
            f'<p class="note">The chart shows the {MAX_MISSING_CHART_COLUMNS} columns with the'
            f" most missing values. {count_phrase(omitted_count, 'more column', 'more columns')}"
            " with missing values appear only in the column details.</p>"
        )
    return Section("missing", "Missing values", "".join(body))


def columns_section(report: Mapping[str, Any]) -> Section | None:
    if report.get("columns") is None:
        return None
    columns = column_list(report)
    if not columns:
        return Section("columns", "Columns", "<p>The report lists no columns.</p>")
    body = [column_overview(columns)]
    body.extend(column_details(index, column) for index, column in enumerate(columns, start=1))
    return Section("columns", "Columns", "".join(body))


def outputs_section(report: Mapping[str, Any]) -> Section | None:
    if report.get("outputs") is None:
        return None
    outputs = [as_mapping(item) for item in as_list(report.get("outputs"))]
    if not outputs:
        return Section("outputs", "Outputs", "<p>The job wrote no outputs.</p>")
    rows = [[html_value(output.get(key)) for key in ("name", "path", "rows")] for output in outputs]
    return Section("outputs", "Outputs", html_table(["Name", "Path", "Rows"], rows, numeric={2}))


def recipe_section(report: Mapping[str, Any]) -> Section | None:
    return json_section(report, key="recipe", anchor="recipe", heading="Recipe")


def fitted_section(report: Mapping[str, Any]) -> Section | None:
    return json_section(report, key="fitted", anchor="fitted", heading="Fitted parameters")


def json_section(
    report: Mapping[str, Any], *, key: str, anchor: str, heading: str
) -> Section | None:
    value = report.get(key)
    if value is None:
        return None
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return Section(anchor, heading, f"<pre>{escape(text)}</pre>")


def notes_section(report: Mapping[str, Any]) -> Section | None:
    notes = as_list(report.get("notes"))
    if not notes:
        return None
    items = "".join(f"<li>{html_value(note)}</li>" for note in notes)
    return Section("notes", "Notes", f"<ul>{items}</ul>")


# --- Columns --------------------------------------------------------------------------------


def column_list(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [as_mapping(item) for item in as_list(report.get("columns"))]


def column_anchor(index: int) -> str:
    # Ids come from the position, never from the name, so any name gives a valid unique id.
    return f"column-{index}"


def column_overview(columns: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for index, column in enumerate(columns, start=1):
        link = f'<a href="#{column_anchor(index)}">{html_value(column.get("name"))}</a>'
        rows.append(
            [
                link,
                html_value(column.get("type")),
                missing_count_html(column, "missing_before", "created by the steps"),
                missing_count_html(column, "missing_after", "removed by the steps"),
                distinct_html(column),
            ]
        )
    headers = ["Column", "Type", "Missing before", "Missing after", "Distinct"]
    return html_table(headers, rows, numeric={2, 3, 4}, caption="Overview")


def column_details(index: int, column: Mapping[str, Any]) -> str:
    name = html_value(column.get("name"))
    column_type = html_value(column.get("type"))
    heading = f'<h3 id="{column_anchor(index)}">{name} <span class="type">{column_type}</span></h3>'
    statistics = html_table(["Statistic", "Value"], column_statistics(column), numeric={1})
    return f'{heading}<div class="column">{statistics}{column_chart(index, column)}</div>'


def column_statistics(column: Mapping[str, Any]) -> list[list[str]]:
    rows = [
        ["Missing before", missing_count_html(column, "missing_before", "created by the steps")],
        ["Missing after", missing_count_html(column, "missing_after", "removed by the steps")],
        ["Min", html_value(column.get("min"))],
        ["Max", html_value(column.get("max"))],
    ]
    for key, label in (("mean", "Mean"), ("std", "Standard deviation")):
        if column.get(key) is not None:
            rows.append([label, html_value(column.get(key))])
    for quantile, value in sorted_quantiles(column.get("quantiles")):
        rows.append([f"Quantile {escape(quantile)}", html_value(value)])
    rows.append(["Distinct", distinct_html(column)])
    return rows


def sorted_quantiles(quantiles: object) -> list[tuple[str, Any]]:
    def order(item: tuple[str, Any]) -> tuple[float, str]:
        try:
            return (float(item[0]), item[0])
        except ValueError:
            return (math.inf, item[0])

    return sorted(((str(key), value) for key, value in as_mapping(quantiles).items()), key=order)


def missing_count_html(column: Mapping[str, Any], key: str, meaning_of_null: str) -> str:
    if key in column and column[key] is None:
        return f'{DASH} <span class="note">({meaning_of_null})</span>'
    return html_value(column.get(key))


def distinct_html(column: Mapping[str, Any]) -> str:
    distinct = column.get("distinct")
    if distinct is None or column.get("distinct_exact", True) is not False:
        return html_value(distinct)
    return f"≈{html_value(distinct)} (estimate)"


def column_chart(index: int, column: Mapping[str, Any]) -> str:
    """Draw the histogram of a numeric column, or list the top values of any other."""
    histogram = column.get("histogram")
    if histogram is not None:
        problem = histogram_problem(histogram)
        if problem is None:
            return histogram_chart(index, column.get("name"), as_mapping(histogram))
        note = f'<p class="note">Histogram not shown: {escape(problem)}.</p>'
        return f"<div>{note}{top_values_list(column)}</div>"
    return top_values_list(column)


def histogram_problem(histogram: object) -> str | None:
    """Return why the histogram cannot be drawn, or None when it can."""
    mapping = as_mapping(histogram)
    edges = as_list(mapping.get("edges"))
    counts = as_list(mapping.get("counts"))
    if not counts:
        return "it has no bins"
    if not all(is_number(value) for value in [*edges, *counts]):
        return "its edges and counts must all be numbers"
    if not all(math.isfinite(edge) for edge in edges):
        return "its edges must all be finite"
    if any(later < earlier for earlier, later in itertools.pairwise(edges)):
        return "its edges must not decrease"
    if len(edges) != len(counts) + 1:
        return f"it has {len(edges)} edges for {len(counts)} counts"
    return None


def top_values_list(column: Mapping[str, Any]) -> str:
    entries = [as_mapping(item) for item in as_list(column.get("top_values"))]
    if not entries:
        return ""
    listed = entries[:MAX_TOP_VALUES]
    highest = max(count_or_zero(entry.get("count")) for entry in listed)
    rows = []
    for entry in listed:
        count = count_or_zero(entry.get("count"))
        share = 100 * count / highest if highest > 0 else 0
        rows.append(
            [
                top_value_html(entry.get("value")),
                html_value(entry.get("count")),
                f'<span class="bar-track"><span class="bar" style="width:{share:.1f}%">'
                "</span></span>",
            ]
        )
    caption = "Most frequent values"
    if len(entries) > len(listed):
        caption += f" (the first {len(listed)} of {len(entries)})"
    return html_table(
        ["Value", "Rows", "Relative to the top value"], rows, numeric={1}, caption=caption
    )


def top_value_html(value: object) -> str:
    if value is None:
        return "<em>null</em>"
    return escape(shorten(format_value(value), MAX_VALUE_CHARS))


# --- Charts ---------------------------------------------------------------------------------


def row_split_chart(rows: Mapping[str, Any]) -> str:
    """Draw one stacked bar of rows out, rejected and removed, with a legend that has numbers."""
    parts = [(label, kind, count_or_zero(rows.get(key))) for key, label, kind in ROW_PARTS]
    return (
        svg_open("summary-chart", "Rows out, rejected and removed", 720, 64)
        + pattern_defs("summary")
        + row_split_bar(parts, width=720, height=28)
        + row_split_legend(parts)
        + "</svg>"
    )


def row_split_bar(parts: Sequence[tuple[str, str, float]], *, width: int, height: int) -> str:
    total = sum(count for _, _, count in parts)
    if total <= 0:
        return (
            f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height}" fill="none"'
            ' stroke="#a0aec0"/>'
            f'<text x="{width / 2}" y="19" text-anchor="middle">no rows</text>'
        )

    segments = []
    x = 0.0
    for label, kind, count in parts:
        segment = width * count / total
        tooltip = f"{label}: {format_number(count)} ({count / total:.1%})"
        segments.append(
            f'<rect x="{x:.2f}" y="0" width="{segment:.2f}" height="{height}"'
            f' fill="{fill_for(kind, "summary")}" stroke="#ffffff">'
            f"<title>{escape(tooltip)}</title></rect>"
        )
        x += segment
    return "".join(segments)


def row_split_legend(parts: Sequence[tuple[str, str, float]]) -> str:
    total = sum(count for _, _, count in parts)
    entries = []
    for position, (label, kind, count) in enumerate(parts):
        share = count / total if total > 0 else 0
        x = position * 240
        entries.append(
            f'<rect x="{x}" y="40" width="14" height="14" fill="{fill_for(kind, "summary")}"'
            ' stroke="#4a5568"/>'
            f'<text x="{x + 20}" y="52">'
            f"{escape(label)}: {format_number(count)} ({share:.1%})</text>"
        )
    return "".join(entries)


def missing_values_chart(columns: Sequence[Mapping[str, Any]]) -> str:
    """Draw a pair of horizontal bars per column, missing values before and after the steps.

    The before bar is hatched and the after bar solid, and every bar carries its tag and
    its number as text, so the chart reads without colour.
    """
    top, group_height = 30, 36
    height = top + group_height * len(columns)
    highest = max((max_missing_count(column) for column in columns), default=0) or 1
    svg = [
        svg_open(
            "missing-chart", "Missing values per column, before and after the steps", 720, height
        ),
        pattern_defs("missing"),
        chart_legend_entry(0, "missing", "hatch", "before the steps"),
        chart_legend_entry(200, "missing", "solid", "after the steps"),
    ]
    for position, column in enumerate(columns):
        svg.append(missing_chart_group(column, y=top + position * group_height, highest=highest))
    svg.append("</svg>")
    return "".join(svg)


def missing_chart_group(column: Mapping[str, Any], *, y: int, highest: float) -> str:
    """Draw one column's label and its before and after bars, with the full name as tooltip."""
    name = format_value(column.get("name"))
    parts = [
        f"<g><title>{escape(name)}</title>"
        f'<text x="{MISSING_CHART_LABEL_END}" y="{y + 17}" text-anchor="end">'
        f"{escape(shorten(name, MAX_LABEL_CHARS))}</text>"
    ]
    bars = (
        ("missing_before", "before", "hatch", "created"),
        ("missing_after", "after", "solid", "removed"),
    )
    for offset, (key, tag, kind, null_meaning) in enumerate(bars):
        bar_y = y + offset * 14
        parts.append(
            f'<text x="{MISSING_CHART_TAG_X}" y="{bar_y + 10}" font-size="10">{tag}</text>'
        )
        parts.append(
            missing_bar(
                column, key=key, null_meaning=null_meaning, kind=kind, y=bar_y, highest=highest
            )
        )
    parts.append("</g>")
    return "".join(parts)


def missing_bar(
    column: Mapping[str, Any], *, key: str, null_meaning: str, kind: str, y: int, highest: float
) -> str:
    """Draw one bar with its number, or the reason there is no number."""
    left = MISSING_CHART_BAR_X
    value = column.get(key)
    if not is_number(value):
        text = null_meaning if key in column and value is None else DASH
        return f'<text x="{left + 4}" y="{y + 10}">{escape(text)}</text>'

    count = count_or_zero(value)
    bar_width = MISSING_CHART_BAR_MAX_WIDTH * count / highest
    if count > 0:
        bar_width = max(bar_width, 1.0)
    return (
        f'<rect x="{left}" y="{y}" width="{bar_width:.2f}" height="12"'
        f' fill="{fill_for(kind, "missing")}" stroke="#4a5568" stroke-width="0.5"/>'
        f'<text x="{left + bar_width + 4:.2f}" y="{y + 10}">{escape(format_number(value))}</text>'
    )


def histogram_chart(index: int, name: object, histogram: Mapping[str, Any]) -> str:
    """Draw the histogram of one column. The caller has checked its shape with histogram_problem."""
    edges = [float(edge) for edge in histogram["edges"]]
    counts = [count_or_zero(count) for count in histogram["counts"]]
    left, right, bottom = HISTOGRAM_LEFT, HISTOGRAM_RIGHT, HISTOGRAM_BOTTOM
    title = f"Histogram of {format_value(name)}"
    return (
        svg_open(f"histogram-{index}", title, 360, 170)
        + f'<text x="{left}" y="14">Highest bin: {escape(format_number(max(counts)))} rows</text>'
        + histogram_bars(edges, counts)
        + f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#4a5568"/>'
        + f'<text x="{left}" y="{bottom + 18}">{escape(format_number(edges[0]))}</text>'
        + f'<text x="{right}" y="{bottom + 18}" text-anchor="end">'
        + f"{escape(format_number(edges[-1]))}</text></svg>"
    )


def histogram_bars(edges: Sequence[float], counts: Sequence[float]) -> str:
    """Draw a bar per bin, as wide as the bin and as tall as its count, with a tooltip."""
    positions = bin_positions(edges, HISTOGRAM_LEFT, HISTOGRAM_RIGHT)
    highest = max(counts)
    plot_height = HISTOGRAM_BOTTOM - HISTOGRAM_TOP
    bars = []
    for bin_index, count in enumerate(counts):
        x_start, x_end = positions[bin_index], positions[bin_index + 1]
        # A 1-unit gap separates bars that are wide enough to spare it.
        bar_width = x_end - x_start - 1 if x_end - x_start > 2 else x_end - x_start
        bar_height = plot_height * count / highest if highest > 0 else 0.0
        tooltip = (
            f"{format_number(edges[bin_index])} to {format_number(edges[bin_index + 1])}:"
            f" {format_number(count)} rows"
        )
        bars.append(
            f'<rect class="bar" x="{x_start:.2f}" y="{HISTOGRAM_BOTTOM - bar_height:.2f}"'
            f' width="{bar_width:.2f}" height="{bar_height:.2f}" fill="{SOLID_FILL}">'
            f"<title>{escape(tooltip)}</title></rect>"
        )
    return "".join(bars)


def bin_positions(edges: Sequence[float], left: float, right: float) -> list[float]:
    """Map bin edges to x positions, with equal widths when the edges span no finite range."""
    span = edges[-1] - edges[0]
    if not math.isfinite(span) or span <= 0:
        step = (right - left) / (len(edges) - 1)
        return [left + step * position for position in range(len(edges))]
    return [left + (right - left) * (edge - edges[0]) / span for edge in edges]


def svg_open(chart_id: str, title: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart" id="{chart_id}" role="img" aria-labelledby="{chart_id}-title"'
        f' viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
    )


def pattern_defs(prefix: str) -> str:
    hatch_background, hatch_line = HATCH_COLOURS
    dot_background, dot = DOT_COLOURS
    return (
        "<defs>"
        f'<pattern id="{prefix}-hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="{hatch_background}"/>'
        f'<rect width="2" height="6" fill="{hatch_line}"/></pattern>'
        f'<pattern id="{prefix}-dots" width="6" height="6" patternUnits="userSpaceOnUse">'
        f'<rect width="6" height="6" fill="{dot_background}"/>'
        f'<circle cx="3" cy="3" r="1.4" fill="{dot}"/></pattern>'
        "</defs>"
    )


def fill_for(kind: str, prefix: str) -> str:
    """Return the SVG fill of a chart part: "solid", or a pattern that pattern_defs declared."""
    if kind == "solid":
        return SOLID_FILL
    return f"url(#{prefix}-{kind})"


def chart_legend_entry(x: int, prefix: str, kind: str, label: str) -> str:
    return (
        f'<rect x="{x}" y="4" width="14" height="14" fill="{fill_for(kind, prefix)}"'
        ' stroke="#4a5568"/>'
        f'<text x="{x + 20}" y="16">{escape(label)}</text>'
    )


# --- Values ---------------------------------------------------------------------------------


def html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: frozenset[int] | set[int] = frozenset(),
    caption: str | None = None,
) -> str:
    """Build a table from plain-text headers and cells that are already HTML.

    The first cell of each row becomes its row header. Columns listed in ``numeric`` are
    right-aligned.
    """

    def class_of(position: int) -> str:
        return ' class="num"' if position in numeric else ""

    head = "".join(
        f'<th scope="col"{class_of(position)}>{escape(text)}</th>'
        for position, text in enumerate(headers)
    )
    body = []
    for cells in rows:
        row = [
            f'<th scope="row"{class_of(0)}>{cells[0]}</th>',
            *(
                f"<td{class_of(position)}>{cell}</td>"
                for position, cell in enumerate(cells)
                if position
            ),
        ]
        body.append(f"<tr>{''.join(row)}</tr>")
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (
        f"<table>{caption_html}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def html_value(value: object) -> str:
    return escape(format_value(value))


def format_value(value: object) -> str:
    """Format a JSON value as plain text, which the caller must escape."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def format_number(value: float) -> str:
    """Format with thousands separators, and floats to about 4 significant digits."""
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    # Whole numbers need no fraction, and at 5 or more integer digits the fraction is noise.
    if abs(value) < 1e15 and (value.is_integer() or abs(value) >= 1e4):
        return f"{value:,.0f}"
    return f"{value:,.4g}"


def is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def count_or_zero(value: object) -> float:
    """Return a count from the report, or 0 when it is missing, negative or not a finite number."""
    if is_number(value) and math.isfinite(value) and value > 0:
        return value
    return 0


def as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def count_phrase(count: int, singular: str, plural: str) -> str:
    return f"{format_number(count)} {singular if count == 1 else plural}"


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def has_missing_values(column: Mapping[str, Any]) -> bool:
    return max_missing_count(column) > 0


def max_missing_count(column: Mapping[str, Any]) -> float:
    return max(
        count_or_zero(column.get("missing_before")), count_or_zero(column.get("missing_after"))
    )


def top_missing_columns(
    columns: Sequence[Mapping[str, Any]], limit: int
) -> list[Mapping[str, Any]]:
    """Select the ``limit`` columns with the most missing values, in their report order."""
    ranked = sorted(range(len(columns)), key=lambda position: -max_missing_count(columns[position]))
    return [columns[position] for position in sorted(ranked[:limit])]
