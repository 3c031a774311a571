"""Assemble the job's data-quality report (report.json) and write it with report.html."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prepflow.processing.engine import RunResult
from prepflow.processing.paths import REPORT_HTML, REPORT_JSON, per_host_name
from prepflow.processing.profile import SAMPLE_ROWS, SKETCH_SIZE, TOP_TRACK_LIMIT
from prepflow.processing.recipe import Recipe
from prepflow.processing.report_html import render_html
from prepflow.processing.writers import write_json


def build_report(
    result: RunResult,
    recipe: Recipe,
    *,
    job_name: str | None,
    rejected_location: str | None,
    host: str | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "job_name": job_name,
        "generated_at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "rows": {
            "in": result.rows_in,
            "out": result.rows_out,
            "rejected": result.rows_rejected,
            "removed": result.rows_removed,
        },
        "sources": result.sources,
        "steps": [
            {
                "index": count.index,
                "step": count.step,
                "description": count.description,
                "rows_in": count.rows_in,
                "rows_out": count.rows_out,
                "removed": count.removed,
                "rejected": count.rejected,
            }
            for count in result.steps
        ],
        "rejected": {
            "total": result.rows_rejected,
            "by_reason": result_reasons(result),
            "location": rejected_location,
        },
        "columns": _columns(result),
        "outputs": result.outputs,
        "recipe": recipe.to_dict(),
        "fitted": result.fitted or None,
        "notes": [
            f"Quantiles and histograms are estimated from a uniform sample of up to "
            f"{SAMPLE_ROWS:,} output rows.",
            f"Distinct counts are exact below {SKETCH_SIZE:,} values and estimated above.",
            f"Top values are exact for columns with at most {TOP_TRACK_LIMIT:,} distinct values.",
            "rows in = rows out + rows rejected + rows removed by steps.",
            "missing_before counts the values missing in the files that have the column; "
            "a column some files lack is missing in all their rows afterwards.",
        ],
    }
    if host is not None:
        # Each host of a job reports on its share of the objects only.
        report["host"] = host
    return report


def result_reasons(result: RunResult) -> dict[str, int]:
    return dict(sorted(result.rejected_reasons.items(), key=lambda item: -item[1]))


def _columns(result: RunResult) -> list[dict[str, Any]]:
    names = list(result.missing_before)
    names += [name for name in result.output_profile if name not in result.missing_before]
    columns = []
    for name in names:
        profile = result.output_profile.get(name)
        entry: dict[str, Any] = {
            "name": name,
            "missing_before": result.missing_before.get(name),
            "set_missing_as_invalid": result.set_missing.get(name, 0),
            "missing_after": None if profile is None else profile["missing"],
        }
        if profile is not None:
            entry.update({key: value for key, value in profile.items() if key != "missing"})
        else:
            entry["type"] = None
        columns.append(entry)
    return columns


def write_report(folder: Path, report: dict[str, Any], host: str | None = None) -> None:
    """Write report.json and report.html, named per host on a job with several."""
    write_json(folder / per_host_name(REPORT_JSON, host), report)
    (folder / per_host_name(REPORT_HTML, host)).write_text(render_html(report), encoding="utf-8")
