"""Hostile data: a gzip bomb, a 200 MB line and formula cells, through the built-in step.

The step runs as a child process and the test reads that child's own peak resident memory
from ``os.wait4``, so the memory bound holds for the job process whatever else runs.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from prepflow.jobs.spec import JobStatus
from tests.helpers import read_rows

MEMORY_BOUND_BYTES = 1 << 30
LONG_LINE_BYTES = 200 << 20
BOMB_MEMBER_BYTES = 16 << 20
BOMB_MEMBERS = 128  # 2 GiB once decompressed
# More than twice a lowered limit of 100,000 bytes, below the default of 4 MiB.
WIDE_ROW = b"x" * 300_000
STEP_TIMEOUT_SECONDS = 300
JOB_TIMEOUT_SECONDS = 300


@dataclass
class MeasuredRun:
    returncode: int
    stderr: str
    peak_rss_bytes: int
    output: Path
    rejected: Path

    @property
    def error(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def run_measured(
    tmp_path: Path, recipe: str | None = None, env: dict[str, str] | None = None
) -> MeasuredRun:
    """Run the step on ``tmp_path/in`` and return its exit code, stderr and peak RSS."""
    output, rejected = tmp_path / "out", tmp_path / "rejected"
    argv = [sys.executable, "-m", "prepflow.processing", "--input", str(tmp_path / "in")]
    argv += ["--output", str(output), "--rejected", str(rejected)]
    if recipe is not None:
        (tmp_path / "recipe.yaml").write_text(recipe)
        argv += ["--recipe", str(tmp_path / "recipe.yaml")]
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("wb") as stderr:
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **(env or {})}
        )
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            raise
    process.returncode = os.waitstatus_to_exitcode(status)  # keeps Popen from waiting again
    # Linux reports ru_maxrss in KiB.
    return MeasuredRun(
        returncode=process.returncode,
        stderr=stderr_file.read_text(),
        peak_rss_bytes=usage.ru_maxrss * 1024,
        output=output,
        rejected=rejected,
    )


def write_bomb(path: Path) -> int:
    """Write a gzip file of repeated short rows, streaming; return its expanded size."""
    member = gzip.compress(b"1,2,3\n" * (BOMB_MEMBER_BYTES // 6), compresslevel=9)
    with path.open("wb") as file:
        file.write(gzip.compress(b"a,b,c\n"))
        for _ in range(BOMB_MEMBERS):
            file.write(member)
    return 6 + BOMB_MEMBERS * (BOMB_MEMBER_BYTES // 6) * 6


def write_long_line(path: Path, head: bytes, tail: bytes, size: int = LONG_LINE_BYTES) -> None:
    block = b"y" * (1 << 20)
    with path.open("wb") as file:
        file.write(head)
        for _ in range(size // len(block)):
            file.write(block)
        file.write(tail)


@pytest.mark.timeout(STEP_TIMEOUT_SECONDS)
def test_gzip_bomb_stopped(tmp_path, figures):
    (tmp_path / "in").mkdir()
    bomb = tmp_path / "in" / "bomb.csv.gz"
    expanded = write_bomb(bomb)

    run = run_measured(tmp_path)

    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "cannot decompress 'bomb.csv.gz'" in run.error
    assert "PREPFLOW_MAX_DECOMPRESSION_RATIO" in run.error
    assert run.peak_rss_bytes < MEMORY_BOUND_BYTES
    assert not list(run.output.rglob("*.csv"))
    figures.record(
        f"gzip bomb: {bomb.stat().st_size:,} bytes expanding to {expanded:,}",
        1,
        f"job failed naming PREPFLOW_MAX_DECOMPRESSION_RATIO; peak RSS "
        f"{run.peak_rss_bytes >> 20} MiB",
    )


@pytest.mark.timeout(STEP_TIMEOUT_SECONDS)
def test_csv_line_of_200_mb_stopped(tmp_path, figures):
    (tmp_path / "in").mkdir()
    data = tmp_path / "in" / "long.csv"
    try:
        write_long_line(data, b"a,b\n1,2\n", b",3\n4,5\n")
        run = run_measured(tmp_path)
    finally:
        data.unlink()

    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "(line 3) is longer than the maximum record size of 4,194,304 bytes" in run.error
    assert "PREPFLOW_MAX_RECORD_BYTES" in run.error
    assert run.peak_rss_bytes < MEMORY_BOUND_BYTES
    figures.record(
        "CSV file with one 200 MB line",
        1,
        f"job failed naming the line and PREPFLOW_MAX_RECORD_BYTES; peak RSS "
        f"{run.peak_rss_bytes >> 20} MiB",
    )


@pytest.mark.timeout(STEP_TIMEOUT_SECONDS)
def test_json_line_of_200_mb_rejected(tmp_path, figures):
    (tmp_path / "in").mkdir()
    data = tmp_path / "in" / "long.jsonl"
    try:
        write_long_line(data, b'{"a": "1"}\n{"a": "', b'"}\n{"a": "3"}\n')
        run = run_measured(tmp_path)
    finally:
        data.unlink()

    assert run.returncode == 0, run.stderr
    assert [row["a"] for row in read_rows(run.output / "processed_long.csv")] == ["1", "3"]
    (rejected,) = read_rows(run.rejected / "rejected.csv")
    assert rejected["line"] == "2"
    assert "longer than the maximum record size of 4,194,304 bytes" in rejected["reason"]
    assert "PREPFLOW_MAX_RECORD_BYTES" in rejected["reason"]
    assert len(rejected["row"]) < 1000
    assert run.peak_rss_bytes < MEMORY_BOUND_BYTES
    figures.record(
        "JSON Lines file with one 200 MB line between two good ones",
        1,
        f"line rejected naming PREPFLOW_MAX_RECORD_BYTES, 2 rows out; peak RSS "
        f"{run.peak_rss_bytes >> 20} MiB",
    )


def test_record_limit_setting_applies(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "wide.csv").write_bytes(b"a,b\n" + WIDE_ROW + b",1\n")

    default = run_measured(tmp_path)
    lowered = run_measured(tmp_path, env={"PREPFLOW_MAX_RECORD_BYTES": "100000"})
    invalid = run_measured(tmp_path, env={"PREPFLOW_MAX_RECORD_BYTES": "many"})

    assert default.returncode == 0, default.stderr
    assert lowered.returncode == 1
    assert "(line 2) is longer than the maximum record size of 100,000 bytes" in lowered.error
    assert invalid.returncode == 1
    assert "PREPFLOW_MAX_RECORD_BYTES='many' is invalid" in invalid.error


def test_small_repetitive_gzip_passes(tmp_path):
    # About 1,000 times smaller compressed, but under the minimum allowance of 64 MiB.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "zeros.csv.gz").write_bytes(gzip.compress(b"a,b\n" + b"0,0\n" * 500_000))

    run = run_measured(tmp_path)

    assert run.returncode == 0, run.stderr
    assert len(read_rows(run.output / "processed_zeros.csv")) == 500_000


@pytest.mark.timeout(JOB_TIMEOUT_SECONDS)
def test_pipeline_job_fails_on_bomb(cli, make_app, tmp_path, figures):
    bomb = tmp_path / "bomb.csv.gz"
    write_bomb(bomb)
    wide = tmp_path / "wide.csv"
    wide.write_bytes(b"a,b\n" + WIDE_ROW + b",1\n")
    env = {"PREPFLOW_ISOLATION": "none", "PREPFLOW_MAX_RECORD_BYTES": "100000"}

    result = cli("run", str(bomb), str(wide), "--json", env=env, timeout=JOB_TIMEOUT_SECONDS)

    assert result.returncode == 1, result.stderr
    jobs = json.loads(result.stdout)
    records = {
        record.inputs[0].rsplit("/", 1)[-1]: record for record in make_app().jobs.list_jobs()
    }
    assert len(jobs) == 2
    assert records["bomb.csv.gz"].status == JobStatus.FAILED
    assert "PREPFLOW_MAX_DECOMPRESSION_RATIO" in (records["bomb.csv.gz"].failure_reason or "")
    assert records["wide.csv"].status == JobStatus.FAILED
    assert "maximum record size of 100,000 bytes" in (records["wide.csv"].failure_reason or "")
    figures.record(
        "`prepflow run` of a gzip bomb and of a record over a lowered PREPFLOW_MAX_RECORD_BYTES",
        2,
        "both jobs Failed with the limit and its setting in the reason",
    )


FORMULA_ROWS = (
    "name,amount,code\n"
    '=HYPERLINK("http://127.0.0.1"),-3,+1\n'
    "@SUM(A1),4,-2+3\n"
    '"\tTAB",5,plain\n'
    '"\rCR",6,-7\n'
    "safe,bad,=1+1\n"
)
ESCAPE_RECIPE = """
schema:
  columns:
    amount: {type: int}
output: {escape_formulas: true}
"""


def test_formula_cells_escaped_when_asked(tmp_path, figures):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cells.csv").write_text(FORMULA_ROWS)

    run = run_measured(tmp_path, recipe=ESCAPE_RECIPE)

    assert run.returncode == 0, run.stderr
    rows = read_rows(run.output / "data.csv")
    assert [row["name"] for row in rows] == [
        '\'=HYPERLINK("http://127.0.0.1")',
        "'@SUM(A1)",
        "'\tTAB",
        "'\rCR",
    ]
    assert [row["amount"] for row in rows] == ["-3", "4", "5", "6"]
    assert [row["code"] for row in rows] == ["+1", "'-2+3", "plain", "-7"]
    (rejected,) = read_rows(run.rejected / "rejected.csv")
    assert rejected["value"] == "bad"
    assert json.loads(rejected["row"])["code"] == "=1+1"
    assert rejected["row"].startswith("{")
    figures.record(
        "text cells starting with =, +, -, @, tab or CR, with output.escape_formulas",
        6,
        "each written with a leading quote; numbers such as -3 unchanged",
    )


def test_formula_cells_in_rejected_rows_escaped(tmp_path):
    (tmp_path / "in").mkdir()
    # The reader rejects a row with too many fields and keeps its raw text.
    (tmp_path / "in" / "ragged.csv").write_text("a,b\n1,2\n=cmd|' /C calc'!A0,2,3\n")

    escaped = run_measured(tmp_path, recipe="output: {escape_formulas: true}")
    (row,) = read_rows(escaped.rejected / "rejected.csv")
    plain = run_measured(tmp_path)
    (raw,) = read_rows(plain.rejected / "rejected.csv")

    assert escaped.returncode == 0, escaped.stderr
    assert row["row"] == "'=cmd|' /C calc'!A0,2,3"
    assert raw["row"] == "=cmd|' /C calc'!A0,2,3"


def test_formula_cells_unchanged_by_default(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cells.csv").write_text(FORMULA_ROWS)

    run = run_measured(tmp_path, recipe="schema: {columns: {amount: {type: int}}}")

    assert run.returncode == 0, run.stderr
    rows = read_rows(run.output / "data.csv")
    assert rows[0]["name"] == '=HYPERLINK("http://127.0.0.1")'
    assert rows[1]["code"] == "-2+3"


def test_formula_column_names_escaped(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "header.csv").write_text("=name,-3\nx,1\n")

    run = run_measured(tmp_path, recipe="output: {escape_formulas: true}")

    assert run.returncode == 0, run.stderr
    header = (run.output / "data.csv").read_text().splitlines()[0]
    assert header == "'=name,-3"
