"""The built-in step run directly: ``python -m prepflow.processing --input DIR --output DIR``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from prepflow.errors import ProcessingError
from prepflow.processing import outputs, readers, writers
from prepflow.processing.__main__ import run
from prepflow.processing.paths import StepPaths
from tests.helpers import read_rows


def run_step(input_dir, output_dir, *options):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "prepflow.processing",
            "--input",
            str(input_dir),
            "--output",
            str(output_dir),
            *map(str, options),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def step_on_file(source, tmp_path):
    """Run the step in this process on the one file ``source``; return the ExitMessage fields."""
    folder = tmp_path / "step-input"
    folder.mkdir()
    (folder / source.name).write_bytes(source.read_bytes())
    paths = StepPaths(
        input_dir=folder,
        output_dir=tmp_path / "step-output",
        rejected_dir=tmp_path / "step-rejected",
        report_dir=tmp_path / "step-report",
    )
    return run(paths)


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
    assert "no data files (.csv, .parquet, .jsonl, .ndjson, .json, .gz)" in result.stderr


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

    result = step_on_file(source, tmp_path)

    assert result["rows_in"] == 3
    assert result["rows_out"] == 2


def last_stderr_line(result):
    return result.stderr.strip().splitlines()[-1]


def test_step_names_line_of_long_row(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    # The quoted newline makes the long record start on physical line 5, not line 4.
    (source / "orders.csv").write_text('id,name,note\n1,Ana,"two\nlines"\n2,Bo,ok\n3,Cy,x,y\n')

    result = run_step(source, tmp_path / "out", "--rejected", tmp_path / "rejected")

    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out" / "processed_orders.csv")
    assert [row["id"] for row in rows] == ["1", "2"]
    (rejected,) = read_rows(tmp_path / "rejected" / "rejected.csv")
    assert rejected["line"] == "5"
    assert rejected["reason"] == "4 fields, expected 3"
    assert rejected["row"] == "3,Cy,x,y"


def test_long_row_after_blank_lines(tmp_path):
    source = tmp_path / "gaps.csv"
    source.write_text("\nid,name\n1,Ana\n\n2,Bo,extra\n")

    result = step_on_file(source, tmp_path)

    assert result["rows_rejected"] == 1
    (rejected,) = read_rows(tmp_path / "step-rejected" / "rejected.csv")
    assert rejected["line"] == "5"
    assert rejected["reason"] == "3 fields, expected 2"


def test_good_file_skips_diagnosis(tmp_path, monkeypatch):
    def fail(source):
        raise AssertionError(f"diagnosis ran on a good file: {source}")

    monkeypatch.setattr(writers, "map_record_lines", fail)
    monkeypatch.setattr(readers, "find_undecodable_line", fail)
    source = tmp_path / "good.csv"
    source.write_text("id,name\n1,Ana\n2,Bo\n")

    result = step_on_file(source, tmp_path)

    assert result["rows_out"] == 2


def test_step_names_line_not_utf8(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "names.csv").write_bytes("id,name\n1,Ana\n2,Jos\u00e9\n".encode("latin-1"))

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = last_stderr_line(result)
    assert "cannot read 'names.csv': line 3 is not valid utf-8" in message
    # 0xE9 is the latin-1 "é"; the 19 bytes "id,name\n1,Ana\n2,Jos" come before it.
    assert "byte(s) 0xE9 at byte offset 19 of the file" in message
    assert "declare its encoding in the recipe (input.encoding)" in message


def test_non_utf8_line_past_header_chunk(tmp_path):
    # Past the first 8 KiB, which io.TextIOWrapper decodes for the header check, so polars
    # meets the bad byte first.
    good_lines = "".join(f"{number},name{number}\n" for number in range(1, 5001))
    source = tmp_path / "big.csv"
    source.write_bytes(("id,name\n" + good_lines).encode() + b"5001,Jos\xe9\n")

    with pytest.raises(ProcessingError) as raised:
        step_on_file(source, tmp_path)

    offset = len(("id,name\n" + good_lines + "5001,Jos").encode())
    assert f"line 5002 is not valid utf-8: byte(s) 0xE9 at byte offset {offset} " in str(
        raised.value
    )


def test_non_utf8_header_rejected(tmp_path):
    # polars 2.x decodes header bytes lossily, so only the header check catches this.
    source = tmp_path / "caf\u00e9.csv"
    source.write_bytes("caf\u00e9,price\nlatte,3\n".encode("latin-1"))

    with pytest.raises(ProcessingError) as raised:
        step_on_file(source, tmp_path)

    assert "line 1 is not valid utf-8: byte(s) 0xE9 at byte offset 3" in str(raised.value)


def test_truncated_utf8_sequence(tmp_path):
    source = tmp_path / "cut.csv"
    source.write_bytes(b"id,name\n1,Ana\n2,\xe2\x82")

    with pytest.raises(ProcessingError) as raised:
        step_on_file(source, tmp_path)

    assert "line 3 is not valid utf-8: byte(s) 0xE2 0x82 at byte offset 16" in str(raised.value)


def test_step_strips_byte_order_mark(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "excel.csv").write_bytes(b"\xef\xbb\xbfcustomer_id,name\n1,Ana\n")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    written = (tmp_path / "out" / "processed_excel.csv").read_text(encoding="utf-8")
    header = written.splitlines()[0].split(",")
    assert header[0] == "customer_id"
    assert header == ["customer_id", "name", "processed_timestamp"]


def test_step_rejects_duplicate_columns(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "x.csv").write_text("id,amount,note,amount\n1,2,a,3\n")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert last_stderr_line(result) == (
        "prepflow.processing: error: duplicate column names in 'x.csv': 'amount' at columns "
        "2 and 4; rename them so each column has one name"
    )
    assert not (tmp_path / "out" / "processed_x.csv").exists()


def test_duplicate_columns_all_listed(tmp_path):
    source = tmp_path / "wide.csv"
    source.write_bytes(b'\xef\xbb\xbfid,a,"id",b,a,a\n1,2,3,4,5,6\n')

    with pytest.raises(ProcessingError) as raised:
        step_on_file(source, tmp_path)

    message = str(raised.value)
    assert "'id' at columns 1 and 3" in message
    assert "'a' at columns 2, 5 and 6" in message
    assert "'b'" not in message


def test_output_name_short_unchanged():
    assert outputs.output_name(Path("people.csv")) == "processed_people.csv"
    fits = "x" * 241 + ".csv"
    assert outputs.output_name(Path(fits)) == "processed_" + fits


@pytest.mark.parametrize("stem_bytes", range(242, 252))
@pytest.mark.parametrize("character", ["a", "\u00e9", "\u20ac", "\U0001f600"])
def test_output_name_fits_limit(stem_bytes, character):
    size = len(character.encode())
    name = character * (stem_bytes // size) + "b" * (stem_bytes % size) + ".csv"

    output = outputs.output_name(Path(name))

    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    assert len(output.encode()) <= 255
    assert output.startswith("processed_" + character)
    assert output.endswith("~" + digest + ".csv")


def test_output_name_long_names_distinct():
    first = "report_" + "x" * 240 + "_1.csv"
    second = "report_" + "x" * 240 + "_2.csv"

    assert outputs.output_name(Path(first)) != outputs.output_name(Path(second))


def test_output_name_long_suffix():
    name = "a." + "b" * 250

    output = outputs.output_name(Path(name))

    assert len(output.encode()) <= 255
    assert output.endswith("~" + hashlib.sha256(name.encode()).hexdigest()[:8])


def test_step_long_file_name(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    name = "export_" + "y" * 244 + ".csv"
    (source / name).write_text("id\n1\n")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out" / outputs.output_name(Path(name)))
    assert [row["id"] for row in rows] == ["1"]


def test_step_rejects_colliding_outputs(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    long_name = "z" * 250 + ".csv"
    # An input already named like the shortened output of long_name collides with it.
    lookalike = outputs.output_name(Path(long_name)).removeprefix("processed_")
    (source / long_name).write_text("id\n1\n")
    (source / lookalike).write_text("id\n2\n")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "would both be written to" in last_stderr_line(result)
    assert not (tmp_path / "out").exists()


def test_step_output_folder_is_file(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.csv").write_text("id\n1\n")
    (tmp_path / "out").write_text("not a folder")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = last_stderr_line(result)
    assert f"cannot write {str(tmp_path / 'out')!r}: File exists" in message


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_step_disk_full(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.csv").write_text("id\n1\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "processed_a.csv").symlink_to("/dev/full")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "No space left on device" in last_stderr_line(result)
    assert Path("/dev/full").is_char_device()


def test_missing_source_reported(tmp_path):
    missing = tmp_path / "gone.csv"

    source = readers.Source(missing, "gone.csv", "csv", None, "utf-8")

    with pytest.raises(ProcessingError) as raised:
        readers.detect(missing, source.name, readers.InputOptions())

    assert f"cannot read {str(missing)!r}: No such file or directory" in str(raised.value)


def test_step_reads_cr_only_line_endings(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "mac.csv").write_bytes(b"a,b\r1,2\r3,4\r")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out" / "processed_mac.csv")
    assert [(row["a"], row["b"]) for row in rows] == [("1", "2"), ("3", "4")]


def test_step_accepts_crlf_line_endings(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "windows.csv").write_bytes(b"a,b\r\n1,2\r\n3,\r\n")

    result = run_step(source, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out" / "processed_windows.csv")
    assert [row["a"] for row in rows] == ["1"]
    assert rows[0]["b"] == "2"


def test_unterminated_quote_rejected(tmp_path):
    source = tmp_path / "open.csv"
    source.write_text('a,b\n1,x\n2,"abc\n3,4\n5,6\n')

    result = step_on_file(source, tmp_path)

    assert (result["rows_in"], result["rows_out"], result["rows_rejected"]) == (2, 1, 1)
    (rejected,) = read_rows(tmp_path / "step-rejected" / "rejected.csv")
    assert rejected["line"] == "3"
    assert rejected["reason"].startswith("unterminated quote in column 'b'")
    assert rejected["row"] == '2,"abc\n3,4\n5,6\n'


def test_closed_quote_at_end_kept(tmp_path):
    source = tmp_path / "closed.csv"
    source.write_text('a,b,c\n1,"x\ny",z\n2,"p\nq",\n')

    result = step_on_file(source, tmp_path)

    # The second row's empty last field makes it incomplete, so the default recipe drops it.
    assert (result["rows_in"], result["rows_out"], result["rows_rejected"]) == (2, 1, 0)
    (row,) = read_rows(tmp_path / "step-output" / "processed_closed.csv")
    assert (row["b"], row["c"]) == ("x\ny", "z")


def test_stray_quote_keeps_line_numbers(tmp_path):
    source = tmp_path / "inches.csv"
    source.write_text('id,item,qty\n1,5" pipe,10\n2,x,20,EXTRA\n3,"a\nb",30\n4,y\n')

    result = step_on_file(source, tmp_path)

    assert result["rows_rejected"] == 2
    rejected = read_rows(tmp_path / "step-rejected" / "rejected.csv")
    assert [(row["line"], row["reason"]) for row in rejected] == [
        ("3", "4 fields, expected 3"),
        ("6", "2 fields, expected 3"),
    ]
