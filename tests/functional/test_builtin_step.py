"""The built-in step run directly: ``python -m prepflow.processing --input DIR --output DIR``."""

from __future__ import annotations

import subprocess
import sys

from prepflow.processing import reference
from tests.helpers import read_rows


def run_step(input_dir, output_dir):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "prepflow.processing",
            "--input",
            str(input_dir),
            "--output",
            str(output_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_step_drops_rows_with_missing_values(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "people.csv").write_text(
        'id,name,country\n1,Ana,PT\n2,,PT\n3,Bo,NA\n4,Cy,""\n5,Di,SE\n'
    )

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out" / "processed_people.csv")
    assert [row["id"] for row in rows] == ["1", "5"]


def test_step_header_only_file(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "empty_rows.csv").write_text("customer_id,name\n")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    written = (tmp_path / "out" / "processed_empty_rows.csv").read_text()
    assert written.splitlines() == ["customer_id,name,processed_timestamp"]


def test_step_empty_file_reported(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "daily_export.csv").write_bytes(b"")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 1
    assert "'daily_export.csv' is empty (0 bytes)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "processed_daily_export.csv").exists()


def test_step_without_data_files(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "readme.txt").write_text("no data here")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 1
    assert "no data files (.csv)" in result.stderr


def test_step_keeps_subfolders(tmp_path):
    source = tmp_path / "in"
    (source / "2024").mkdir(parents=True)
    (source / "2024" / "a.csv").write_text("x\n1\n")
    (source / "b.csv").write_text("x\n2\n")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "2024" / "processed_a.csv").is_file()
    assert (tmp_path / "out" / "processed_b.csv").is_file()


def test_step_skips_blank_lines(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "gaps.csv").write_text("id,name\n1,Ana\n\n2,\n\n3,Cy\n")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out" / "processed_gaps.csv")
    assert [row["id"] for row in rows] == ["1", "3"]


def test_blank_lines_not_counted(tmp_path):
    source = tmp_path / "gaps.csv"
    source.write_text("id,name\n1,Ana\n\n2,\n\n3,Cy\n")

    result = reference.process_file(source, tmp_path / "out.csv")

    assert result.rows_in == 3
    assert result.rows_out == 2
