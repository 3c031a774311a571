"""Fixtures of the reliability tests, and the figures table they feed.

Each test records what it tried, how often, and what held, through the ``figures`` fixture.
With ``PREPFLOW_RELIABILITY_REPORT=docs/reliability.md`` set, the session rewrites the table
between the markers in that file from the figures of the tests that passed, so the page
always shows what a re-run measured. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.functional.conftest import cli, home, make_app  # noqa: F401 (fixtures)

REPORT_VARIABLE = "PREPFLOW_RELIABILITY_REPORT"
TABLE_START = "<!-- figures:start -->"
TABLE_END = "<!-- figures:end -->"


@dataclass
class Figures:
    """Rows of the figures table that one test adds: what was tried, how often, what held."""

    test: str
    rows: list[tuple[str, int, str]] = field(default_factory=list)

    def record(self, tried: str, times: int, held: str) -> None:
        self.rows.append((tried, times, held))


_PASSED: dict[str, Figures] = {}
_COLLECTED: dict[str, Figures] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Collects the figures of the calling test; they count only if the test passes."""
    collected = Figures(test=request.node.nodeid)
    _COLLECTED[request.node.nodeid] = collected
    return collected


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and item.nodeid in _COLLECTED:
        figures = _COLLECTED[item.nodeid]
        if figures.rows:
            _PASSED[item.nodeid] = figures
            # With pytest-xdist, workers hand their figures to the controller in the report.
            report.user_properties.append(("reliability_figures", json.dumps(figures.rows)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # On the controller (or without xdist) collect the figures carried by passing reports.
    for name, value in report.user_properties:
        if name == "reliability_figures":
            _PASSED[report.nodeid] = Figures(
                test=report.nodeid, rows=[(t, int(n), h) for t, n, h in json.loads(value)]
            )


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(REPORT_VARIABLE)
    if not target or hasattr(session.config, "workerinput") or not _PASSED:
        return
    write_table(Path(target), sorted(_PASSED.values(), key=lambda figures: figures.test))


def write_table(path: Path, results: list[Figures]) -> None:
    """Replace the table between the markers in ``path`` with ``results``."""
    lines = [
        TABLE_START,
        "| What was tried | Times | What held | Test |",
        "|---|---:|---|---|",
    ]
    for figures in results:
        test = figures.test.split("::", 1)[-1]
        module = figures.test.split("::", 1)[0].rsplit("/", 1)[-1]
        for tried, times, held in figures.rows:
            lines.append(f"| {tried} | {times:,} | {held} | `{module}::{test}` |")
    lines.append(TABLE_END)
    text = path.read_text(encoding="utf-8") if path.exists() else f"{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{path} has no {TABLE_START} ... {TABLE_END} markers for the table")
    before, rest = text.split(TABLE_START, 1)
    after = rest.split(TABLE_END, 1)[1]
    path.write_text(before + "\n".join(lines) + after, encoding="utf-8")
