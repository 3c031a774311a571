"""Data files from the field, run through the built-in step as a separate process.

Each fixture under tests/fixtures/cases has one test with its expected result. Beside it are
tests of other files with the same kind of fault, written into tmp_path, because a fix for one
file can miss its siblings.
"""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prepflow.processing.readers import CSV_BLOCK_BYTES, JSON_BATCH_LINES
from tests.helpers import CASES, read_rows

STEP_TIMEOUT_SECONDS = 120


@dataclass
class StepRun:
    """The process result of one run of the step, and the folders that run wrote to."""

    process: subprocess.CompletedProcess[str]
    output: Path
    rejected: Path
    report: Path

    @property
    def error(self) -> str:
        """Return the last line of stderr, where the step prints the reason of a failure."""
        lines = self.process.stderr.strip().splitlines()
        return lines[-1] if lines else ""

    def rows(self, name: str) -> list[dict[str, str]]:
        return read_rows(self.output / name)

    def header(self, name: str) -> list[str]:
        with (self.output / name).open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle))

    def rejected_rows(self) -> list[dict[str, str]]:
        """Return the rejected rows sorted by file and line, whatever stage rejected them."""
        rows = read_rows(self.rejected / "rejected.csv")
        return sorted(rows, key=lambda row: (row["source_file"], int(row["line"] or 0)))

    def report_json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.report / "report.json").read_text())
        return document

    def output_files(self) -> list[str]:
        return sorted(path.name for path in self.output.rglob("*") if path.is_file())


def run_step(tmp_path: Path, files: dict[str, bytes], recipe: str | None = None) -> StepRun:
    """Write ``files`` into a fresh input folder and run the step on it, with a recipe if given."""
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    for name, content in files.items():
        (input_dir / name).write_bytes(content)
    output, rejected, report = tmp_path / "out", tmp_path / "rejected", tmp_path / "report"
    options = ["--rejected", str(rejected), "--report", str(report)]
    if recipe is not None:
        recipe_file = tmp_path / "recipe.yaml"
        recipe_file.write_text(recipe, encoding="utf-8")
        options += ["--recipe", str(recipe_file)]

    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "prepflow.processing",
            "--input",
            str(input_dir),
            "--output",
            str(output),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_SECONDS,
        check=False,
    )
    return StepRun(process, output, rejected, report)


def case_bytes(name: str) -> bytes:
    return (CASES / name).read_bytes()


def assert_succeeded(run: StepRun) -> None:
    assert run.process.returncode == 0, run.process.stderr
    assert "Traceback" not in run.process.stderr


def assert_failed_cleanly(run: StepRun) -> None:
    assert run.process.returncode == 1, run.process.stderr
    assert "Traceback" not in run.process.stderr, run.process.stderr


def columns_of(rows: list[dict[str, str]], *names: str) -> list[tuple[str, ...]]:
    return [tuple(row[name] for name in names) for row in rows]


# Byte order mark -------------------------------------------------------------------------------


def test_bom_header_exact_columns(tmp_path):
    run = run_step(tmp_path, {"H29.csv": case_bytes("H29.csv")})

    assert_succeeded(run)
    assert run.header("processed_H29.csv") == [
        "customer_id",
        "name",
        "signup_date",
        "processed_timestamp",
    ]
    rows = run.rows("processed_H29.csv")
    assert columns_of(rows, "customer_id", "name", "signup_date") == [
        ("1001", "Ana Demo", "2024-01-05"),
        ("1002", "Ben Sample", "2024-02-11"),
    ]
    report = run.report_json()
    assert [column["name"] for column in report["columns"]] == [
        "customer_id",
        "name",
        "signup_date",
        "processed_timestamp",
    ]
    assert report["rows"]["out"] == 2


def test_bom_quoted_header_semicolons(tmp_path):
    # A quoted first name right after the BOM, CRLF line ends and a value with a line break.
    content = b'\xef\xbb\xbf"order id";qty;note\r\nA1;2;x\r\nA2;3;"multi\r\nline"\r\nA3;4\r\n'

    run = run_step(tmp_path, {"orders.csv": content}, 'input: {delimiter: ";"}\n')

    assert_succeeded(run)
    assert run.header("data.csv") == ["order id", "qty", "note"]
    assert columns_of(run.rows("data.csv"), "order id", "qty", "note") == [
        ("A1", "2", "x"),
        ("A2", "3", "multi\r\nline"),
    ]
    (rejected,) = run.rejected_rows()
    assert rejected["line"] == "5"
    assert rejected["reason"] == "2 fields, expected 3"


def test_bom_inside_gzip_file(tmp_path):
    content = gzip.compress(b"\xef\xbb\xbfsku,qty\r\nA1,2\r\nA2,3\r\n")

    run = run_step(tmp_path, {"items.csv.gz": content})

    assert_succeeded(run)
    assert run.header("processed_items.csv") == ["sku", "qty", "processed_timestamp"]
    assert columns_of(run.rows("processed_items.csv"), "sku", "qty") == [
        ("A1", "2"),
        ("A2", "3"),
    ]


def test_utf16_bom_header(tmp_path):
    content = "sku,name\r\n1,Café\r\n2,Ünïcode\r\n".encode("utf-16")
    assert content.startswith(b"\xff\xfe")

    run = run_step(tmp_path, {"export.csv": content}, "input: {encoding: utf-16}\n")

    assert_succeeded(run)
    assert run.header("data.csv") == ["sku", "name"]
    assert columns_of(run.rows("data.csv"), "sku", "name") == [("1", "Café"), ("2", "Ünïcode")]


# Legacy encodings ------------------------------------------------------------------------------


def test_cp1252_decoded_exactly(tmp_path):
    run = run_step(tmp_path, {"H30.csv": case_bytes("H30.csv")}, "input: {encoding: cp1252}\n")

    assert_succeeded(run)
    written = (run.output / "data.csv").read_bytes()
    # Decoding raises UnicodeDecodeError unless the whole output is valid UTF-8.
    written.decode("utf-8")
    assert columns_of(run.rows("data.csv"), "id", "city", "note") == [
        ("1", "Montréal", "price \u2013 discount"),
        ("2", "Zürich", "\u201cquoted\u201d remark"),
    ]
    (source,) = run.report_json()["sources"]
    assert source["encoding"] == "cp1252"


def test_cp1252_as_utf8_names_line(tmp_path):
    run = run_step(tmp_path, {"H30.csv": case_bytes("H30.csv")})

    assert_failed_cleanly(run)
    # 0xE9 is the cp1252 "é" of "Montréal". The 21 bytes "id,city,note\r\n1,Montr" precede it.
    assert "cannot read 'H30.csv': line 2 is not valid utf-8" in run.error
    assert "byte(s) 0xE9 at byte offset 21 of the file" in run.error
    assert "(input.encoding)" in run.error
    assert not run.output.exists()


def test_cp1252_other_characters(tmp_path):
    text = (
        "id,item,price\r\n"
        "1,Crème brûlée,5 €\r\n"
        "2,Œuvre ™ «best»,7\r\n"
        "3,Straße… \u2018ok\u2019,9\r\n"
    )

    run = run_step(tmp_path, {"menu.csv": text.encode("cp1252")}, "input: {encoding: cp1252}\n")

    assert_succeeded(run)
    assert columns_of(run.rows("data.csv"), "id", "item", "price") == [
        ("1", "Crème brûlée", "5 €"),
        ("2", "Œuvre ™ «best»", "7"),
        ("3", "Straße… \u2018ok\u2019", "9"),
    ]


@pytest.mark.parametrize(
    ("good_lines", "past_first_block"),
    [(2, False), (200_000, True)],
    ids=["first-block", "past-first-block"],
)
def test_cp1252_undefined_byte_names_line(tmp_path, good_lines, past_first_block):
    # 0x81 has no character in cp1252, so the file cannot be decoded as declared.
    good = "".join(
        f"{number},Zürich {number:07d} \u201cquoted\u201d\r\n" for number in range(good_lines)
    )
    before = ("id,city\r\n" + good).encode("cp1252") + b"99,Z"
    content = before + b"\x81rich\r\n" + b"100,Oslo\r\n"
    assert (len(before) > CSV_BLOCK_BYTES) == past_first_block

    run = run_step(tmp_path, {"cities.csv": content}, "input: {encoding: cp1252}\n")

    assert_failed_cleanly(run)
    bad_line = good_lines + 2
    assert f"cannot read 'cities.csv': line {bad_line} is not valid cp1252" in run.error
    assert f"byte(s) 0x81 at byte offset {len(before)} of the file" in run.error
    assert list(run.output.rglob("*.csv")) == []


# Quoted fields ---------------------------------------------------------------------------------


def test_quoted_newlines_two_records(tmp_path):
    run = run_step(tmp_path, {"H32.csv": case_bytes("H32.csv")})

    assert_succeeded(run)
    assert columns_of(run.rows("processed_H32.csv"), "id", "comment", "score") == [
        ("1", "Late delivery, box damaged\nCustomer called twice", "2"),
        ("2", 'Said "great" service', "5"),
    ]
    assert run.report_json()["rows"] == {"in": 2, "out": 2, "rejected": 0, "removed": 0}
    assert not (run.rejected / "rejected.csv").exists()


def test_multiline_records_start_lines(tmp_path):
    lines = [
        "id,comment,score",  # 1
        '1,"first',  # 2
        "second",  # 3
        'third",4',  # 4
        '2,"He said ""hi, there""",x',  # 5: score is not an int
        '3,"a',  # 6: four fields, starting here
        'b",5,extra',  # 7
        '4,"ok",',  # 8
        '5,"one',  # 9: two fields, starting here
        'two"',  # 10
        '6,"fine",3',  # 11
    ]
    content = ("\r\n".join(lines) + "\r\n").encode()

    run = run_step(tmp_path, {"notes.csv": content}, "schema: {columns: {score: {type: int}}}\n")

    assert_succeeded(run)
    rows = run.rows("data.csv")
    assert columns_of(rows, "id", "comment", "score") == [
        ("1", "first\r\nsecond\r\nthird", "4"),
        ("4", "ok", ""),
        ("6", "fine", "3"),
    ]
    rejected = run.rejected_rows()
    assert columns_of(rejected, "line", "stage", "reason") == [
        ("5", "schema", "invalid int"),
        ("6", "read", "4 fields, expected 3"),
        ("9", "read", "2 fields, expected 3"),
    ]
    assert rejected[0]["value"] == "x"
    assert json.loads(rejected[0]["row"])["comment"] == 'He said "hi, there"'


# Ragged rows -----------------------------------------------------------------------------------


def test_ragged_rows_rejected_with_lines(tmp_path):
    run = run_step(tmp_path, {"H33.csv": case_bytes("H33.csv")})

    assert_succeeded(run)
    assert columns_of(run.rows("processed_H33.csv"), "id", "name", "amount") == [
        ("1", "Ana", "10"),
        ("4", "Dee", "40"),
    ]
    rejected = run.rejected_rows()
    assert columns_of(rejected, "source_file", "line", "stage", "reason", "row") == [
        ("H33.csv", "3", "read", "4 fields, expected 3", "2,Ben,20,EXTRA"),
        ("H33.csv", "4", "read", "2 fields, expected 3", "3,Cy"),
    ]
    report = run.report_json()
    assert report["rows"] == {"in": 4, "out": 2, "rejected": 2, "removed": 0}


def test_ragged_rows_in_gzip_file(tmp_path):
    # Line 5 is blank, so the reader's record numbers and the file's line numbers differ after it.
    content = gzip.compress(b"sku;qty;price\n1;2;3\n2;3\n3;4;5;6;7\n\n4;5;6\n5\n")

    run = run_step(tmp_path, {"stock.csv.gz": content}, 'input: {delimiter: ";"}\n')

    assert_succeeded(run)
    assert columns_of(run.rows("data.csv"), "sku", "qty", "price") == [
        ("1", "2", "3"),
        ("4", "5", "6"),
    ]
    rejected = run.rejected_rows()
    assert columns_of(rejected, "source_file", "line", "reason", "row") == [
        ("stock.csv.gz", "3", "2 fields, expected 3", "2;3"),
        ("stock.csv.gz", "4", "5 fields, expected 3", "3;4;5;6;7"),
        ("stock.csv.gz", "7", "1 field, expected 3", "5"),
    ]


def test_ragged_rows_across_reader_blocks(tmp_path):
    lines = ["id,name,amount"]
    for number in range(1, 300_001):
        if number == 5:
            lines.append("5,too,many,fields")
        elif number == 250_000:
            lines.append("250000,few")
        elif number == 260_000:
            lines.append("260000,bad,notanumber")
        else:
            lines.append(f"{number},name{number:06d},{number % 97}")
    content = ("\n".join(lines) + "\n").encode()
    assert len(content) > CSV_BLOCK_BYTES

    run = run_step(tmp_path, {"big.csv": content}, "schema: {columns: {amount: {type: int}}}\n")

    assert_succeeded(run)
    rejected = run.rejected_rows()
    # The id of each row is one less than its line, because the header is line 1.
    assert columns_of(rejected, "line", "stage", "reason") == [
        ("6", "read", "4 fields, expected 3"),
        ("250001", "read", "2 fields, expected 3"),
        ("260001", "schema", "invalid int"),
    ]
    ids = [int(row["id"]) for row in run.rows("data.csv")]
    assert len(ids) == 299_997
    assert set(range(1, 300_001)) - set(ids) == {5, 250_000, 260_000}


# Files without data rows -----------------------------------------------------------------------


def test_header_only_zero_rows(tmp_path):
    run = run_step(tmp_path, {"H35.csv": case_bytes("H35.csv")})

    assert_succeeded(run)
    written = (run.output / "processed_H35.csv").read_text(encoding="utf-8")
    assert written.splitlines() == ["id,name,amount,processed_timestamp"]
    report = run.report_json()
    assert report["rows"] == {"in": 0, "out": 0, "rejected": 0, "removed": 0}
    (source,) = report["sources"]
    assert source["rows_in"] == 0
    assert report["outputs"] == [{"path": "processed_H35.csv", "rows": 0}]
    assert not (run.rejected / "rejected.csv").exists()


def test_header_only_parquet_output(tmp_path):
    recipe = """
input: {delimiter: ";"}
schema:
  columns:
    id: {type: int}
    price: {type: float}
    day: {type: date}
steps:
  - {step: rename, columns: {price: unit_price}}
  - {step: add_timestamp}
output: {format: parquet}
"""

    run = run_step(tmp_path, {"empty.csv": b"\xef\xbb\xbfid;price;day\r\n"}, recipe)

    assert_succeeded(run)
    table = pq.read_table(run.output / "data.parquet")
    assert table.num_rows == 0
    assert table.schema.names == ["id", "unit_price", "day", "processed_timestamp"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("unit_price").type == pa.float64()
    assert table.schema.field("day").type == pa.date32()
    assert run.report_json()["rows"]["in"] == 0


def test_header_only_gzip_file(tmp_path):
    run = run_step(tmp_path, {"empty.csv.gz": gzip.compress(b"a,b\n")})

    assert_succeeded(run)
    written = (run.output / "processed_empty.csv").read_text(encoding="utf-8")
    assert written.splitlines() == ["a,b,processed_timestamp"]


def test_header_without_line_break(tmp_path):
    # The file ends right after the header, without a line break.
    run = run_step(tmp_path, {"empty.csv": b"id,name,amount"})

    assert_succeeded(run)
    written = (run.output / "processed_empty.csv").read_text(encoding="utf-8")
    assert written.splitlines() == ["id,name,amount,processed_timestamp"]
    assert run.report_json()["rows"]["in"] == 0


def test_json_array_without_records(tmp_path):
    run = run_step(tmp_path, {"none.json": b"[]\n"})

    assert_succeeded(run)
    assert run.report_json()["rows"]["in"] == 0
    written = (run.output / "processed_none.csv").read_text(encoding="utf-8")
    # An empty array has no columns, so its brackets must not become a column name.
    assert "[]" not in written


# Duplicate column names ------------------------------------------------------------------------


def test_duplicate_columns_named(tmp_path):
    run = run_step(tmp_path, {"H36.csv": case_bytes("H36.csv")})

    assert_failed_cleanly(run)
    assert "duplicate column names in 'H36.csv': 'amount' at columns 2 and 3" in run.error
    assert not (run.output / "processed_H36.csv").exists()


def test_three_duplicate_names(tmp_path):
    run = run_step(tmp_path, {"wide.csv": b"x,y,x,z,x,y\n1,2,3,4,5,6\n"})

    assert_failed_cleanly(run)
    assert "'x' at columns 1, 3 and 5" in run.error
    assert "'y' at columns 2 and 6" in run.error
    assert "'z'" not in run.error
    assert not (run.output / "processed_wide.csv").exists()


def test_parquet_duplicate_names(tmp_path):
    table = pa.table(
        [pa.array([1, 2]), pa.array([3, 4]), pa.array(["a", "b"])], names=["id", "v", "id"]
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)

    run = run_step(tmp_path, {"dup.parquet": sink.getvalue().to_pybytes()})

    assert_failed_cleanly(run)
    assert "duplicate column names in 'dup.parquet': 'id' at columns 1 and 3" in run.error


def test_json_lines_duplicate_keys(tmp_path):
    # json.loads keeps only the last value of a repeated key, so the first would be lost unseen.
    content = b'{"id": 1, "v": "a"}\n{"id": 2, "v": "b", "v": "c"}\n{"id": 3, "v": "d"}\n'

    run = run_step(tmp_path, {"events.jsonl": content})

    assert_succeeded(run)
    assert [row["id"] for row in run.rows("processed_events.csv")] == ["1", "3"]
    (rejected,) = run.rejected_rows()
    assert rejected["line"] == "2"
    assert "duplicate" in rejected["reason"]
    assert "'v'" in rejected["reason"]


def test_rename_onto_existing_column(tmp_path):
    recipe = "steps: [{step: rename, columns: {a: b}}]\n"

    run = run_step(tmp_path, {"x.csv": b"a,b\n1,2\n"}, recipe)

    assert_failed_cleanly(run)
    assert "'b'" in run.error
    assert not (run.output / "data.csv").exists()


def test_extracted_field_clashes_with_column(tmp_path):
    content = b'id,attrs\n1,"{""id"": 99, ""c"": 2}"\n'
    recipe = "steps: [{step: extract_json, column: attrs, fields: [id, c]}]\n"

    run = run_step(tmp_path, {"x.csv": content}, recipe)

    # Overwriting the file's own id column with the extracted one would change data unseen.
    assert_failed_cleanly(run)
    assert "'id'" in run.error
    assert not (run.output / "data.csv").exists()


# Leading zeros and stable types ----------------------------------------------------------------


def test_leading_zeros_kept_with_schema(tmp_path):
    recipe = """
schema:
  columns:
    id: {type: string}
    zip: {type: string}
    amount: {type: int}
output: {format: parquet}
"""

    run = run_step(tmp_path, {"H37.csv": case_bytes("H37.csv")}, recipe)

    assert_succeeded(run)
    table = pq.read_table(run.output / "data.parquet")
    assert pa.types.is_large_string(table.schema.field("zip").type)
    assert pa.types.is_large_string(table.schema.field("id").type)
    assert table.column("zip").to_pylist() == ["02134", "10001", "00501"]
    assert table.column("id").to_pylist() == ["00123", "A-17", "789"]
    assert table.column("amount").to_pylist() == [10, 5, 7]


def test_leading_zeros_kept_without_schema(tmp_path):
    run = run_step(tmp_path, {"H37.csv": case_bytes("H37.csv")})

    assert_succeeded(run)
    assert columns_of(run.rows("processed_H37.csv"), "id", "zip", "amount") == [
        ("00123", "02134", "10"),
        ("A-17", "10001", "5"),
        ("789", "00501", "7"),
    ]


@pytest.mark.parametrize(
    "schema",
    ["", "schema: {columns: {zip: {type: string}}}\n"],
    ids=["no-schema", "zip-string"],
)
def test_leading_zeros_across_reader_blocks(tmp_path, schema):
    count = 560_000
    lines = ["id,zip,amount"]
    lines += [f"{number:08d},{number % 100_000:05d},{number % 1000}" for number in range(count)]
    content = ("\n".join(lines) + "\n").encode()
    # The file is larger than two reader blocks, so the zip column arrives in several batches.
    assert len(content) > 2 * CSV_BLOCK_BYTES

    run = run_step(tmp_path, {"codes.csv": content}, schema + "output: {format: parquet}\n")

    assert_succeeded(run)
    table = pq.read_table(run.output / "data.parquet")
    assert pa.types.is_large_string(table.schema.field("zip").type)
    zips = table.column("zip").to_pylist()
    assert zips == [f"{number % 100_000:05d}" for number in range(count)]


def test_json_lines_type_across_batches(tmp_path):
    # The code is a JSON number in the first batch of lines and text after it.
    count = JSON_BATCH_LINES + 5_000
    records = [
        {"code": number if number < JSON_BATCH_LINES else f"A-{number}", "zip": f"{number:05d}"}
        for number in range(count)
    ]
    content = "".join(json.dumps(record) + "\n" for record in records).encode()

    run = run_step(tmp_path, {"codes.jsonl": content}, "output: {format: parquet}\n")

    assert_succeeded(run)
    table = pq.read_table(run.output / "data.parquet")
    assert table.num_rows == count
    codes = table.column("code").to_pylist()
    assert codes[0] == "0"
    assert codes[JSON_BATCH_LINES - 1] == str(JSON_BATCH_LINES - 1)
    assert codes[-1] == f"A-{count - 1}"


# Missing-value tokens --------------------------------------------------------------------------


def test_missing_tokens_per_column(tmp_path):
    recipe = """
schema:
  columns:
    iso2: {type: string, missing_values: [""]}
    population: {type: int, missing_values: ["", "null", "-"]}
"""

    run = run_step(tmp_path, {"H39.csv": case_bytes("H39.csv")}, recipe)

    assert_succeeded(run)
    rows = run.rows("data.csv")
    assert columns_of(rows, "country", "iso2", "population", "status") == [
        ("Namibia", "NA", "2600000", "active"),
        ("Nowhere", "", "", ""),
        ("France", "FR", "", ""),
    ]
    report = run.report_json()
    missing = {column["name"]: column["missing_before"] for column in report["columns"]}
    assert missing == {"country": 0, "iso2": 1, "population": 2, "status": 2}
    assert report["rows"] == {"in": 3, "out": 3, "rejected": 0, "removed": 0}


def test_missing_tokens_other_values(tmp_path):
    content = b"code,score,note,ratio\nNULL,1.5,NA,0.5\nNone,n.a.,ok,-\nNA,?,,1\nx,,None,2\n"
    recipe = """
schema:
  columns:
    code: {type: string, missing_values: []}
    score: {type: float, missing_values: ["n.a.", "?", ""]}
    ratio: {type: float}
"""

    run = run_step(tmp_path, {"measures.csv": content}, recipe)

    assert_succeeded(run)
    assert columns_of(run.rows("data.csv"), "code", "score", "note", "ratio") == [
        ("NULL", "1.5", "", "0.5"),
        ("NA", "", "", "1.0"),
        ("x", "", "", "2.0"),
    ]
    # "-" is a missing token of no column here, so it is an invalid float in ratio.
    (rejected,) = run.rejected_rows()
    assert columns_of([rejected], "line", "column", "reason", "value") == [
        ("3", "ratio", "invalid float", "-")
    ]
    assert json.loads(rejected["row"])["code"] == "None"
    report = run.report_json()
    missing = {column["name"]: column["missing_before"] for column in report["columns"]}
    assert missing == {"code": 0, "score": 3, "note": 3, "ratio": 0}


# Gzip ------------------------------------------------------------------------------------------


def test_gzip_detected_by_magic(tmp_path):
    compressed = case_bytes("H41.csv.gz")
    files = {
        "H41.csv.gz": compressed,
        "H41-misnamed.csv": case_bytes("H41-misnamed.csv"),
        "H41-plain.csv": gzip.decompress(compressed),
    }

    run = run_step(tmp_path, files)

    assert_succeeded(run)
    assert run.output_files() == [
        "processed_H41-misnamed.csv",
        "processed_H41-plain.csv",
        "processed_H41.csv",
    ]
    for name in run.output_files():
        assert columns_of(run.rows(name), "id", "amount") == [("1", "10.5"), ("2", "20.0")], name
    sources = {source["file"]: source["compression"] for source in run.report_json()["sources"]}
    assert sources == {"H41.csv.gz": "gzip", "H41-misnamed.csv": "gzip", "H41-plain.csv": None}


def test_gzip_csv_variants_in_one_job(tmp_path):
    files = {
        # Two gzip members one after the other, as `cat a.gz b.gz` makes them.
        "MULTI.CSV.GZ": gzip.compress(b"id,v\n5,e\n") + gzip.compress(b"6,f\n"),
        "export.gz": gzip.compress(b"id,v\n7,g\n"),
        "stock.csv": gzip.compress(b"id,v\r\n8,h\r\n"),
    }

    run = run_step(tmp_path, files)

    assert_succeeded(run)
    assert run.output_files() == [
        "processed_MULTI.csv",
        "processed_export.csv",
        "processed_stock.csv",
    ]
    assert columns_of(run.rows("processed_MULTI.csv"), "id", "v") == [("5", "e"), ("6", "f")]
    assert columns_of(run.rows("processed_export.csv"), "id", "v") == [("7", "g")]
    assert columns_of(run.rows("processed_stock.csv"), "id", "v") == [("8", "h")]


def test_gzip_json_variants_in_one_job(tmp_path):
    files = {
        "events.jsonl.gz": gzip.compress(b'{"id": 1, "v": "a"}\n{"id": 2, "v": "b"}\n'),
        "array.json": gzip.compress(b'[{"id": 3, "v": "c"}]'),
    }

    run = run_step(tmp_path, files)

    assert_succeeded(run)
    assert run.output_files() == ["processed_array.csv", "processed_events.csv"]
    assert columns_of(run.rows("processed_events.csv"), "id", "v") == [("1", "a"), ("2", "b")]
    assert columns_of(run.rows("processed_array.csv"), "id", "v") == [("3", "c")]


def test_gzip_csv_and_json_lines(tmp_path):
    # The same columns in a gzip CSV file and in gzip JSON Lines without a .gz suffix.
    files = {
        "orders.csv.gz": gzip.compress(b"id,amount\n1,10.5\n2,20.0\n"),
        "extra.jsonl": gzip.compress(b'{"id": 3, "amount": 30.5}\n'),
    }

    run = run_step(tmp_path, files)

    assert_succeeded(run)
    assert run.output_files() == ["processed_extra.csv", "processed_orders.csv"]
    assert columns_of(run.rows("processed_orders.csv"), "id", "amount") == [
        ("1", "10.5"),
        ("2", "20.0"),
    ]
    assert columns_of(run.rows("processed_extra.csv"), "id", "amount") == [("3", "30.5")]


def test_truncated_gzip_reported(tmp_path):
    content = gzip.compress(b"id,v\n1,x\n2,y\n")[:20]

    run = run_step(tmp_path, {"cut.csv.gz": content})

    assert_failed_cleanly(run)
    assert "input file 'cut.csv.gz' starts like gzip but cannot be decompressed" in run.error
    assert not run.output.exists()


# JSON in a column ------------------------------------------------------------------------------

H43_RECIPE = "steps: [{step: extract_json, column: attrs, fields: [color, size]}]\n"


def test_malformed_json_column(tmp_path):
    run = run_step(tmp_path, {"H43.csv": case_bytes("H43.csv")}, H43_RECIPE)

    assert_succeeded(run)
    assert run.header("data.csv") == ["id", "color", "size"]
    assert columns_of(run.rows("data.csv"), "id", "color", "size") == [
        ("1", "red", "3"),
        ("5", "", ""),
    ]
    rejected = run.rejected_rows()
    assert columns_of(rejected, "line", "stage", "column") == [
        ("3", "step 1", "attrs"),
        ("4", "step 1", "attrs"),
        ("5", "step 1", "attrs"),
    ]
    assert [json.loads(row["row"])["id"] for row in rejected] == ["2", "3", "4"]
    assert [row["value"] for row in rejected] == [
        "{'color': 'blue'}",
        '{"color": "green",}',
        '{"color": "bl',
    ]
    reasons = [row["reason"] for row in rejected]
    assert reasons[0] == (
        "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    )
    assert reasons[1] == (
        "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 19 "
        "(char 18)"
    )
    assert reasons[2].startswith("invalid JSON: Unterminated string starting at")
    assert reasons[2].endswith("line 1 column 11 (char 10)")
    assert run.report_json()["rows"] == {"in": 5, "out": 2, "rejected": 3, "removed": 0}


def test_json_message_without_repeated_word(tmp_path):
    run = run_step(tmp_path, {"H43.csv": case_bytes("H43.csv")}, H43_RECIPE)

    assert_succeeded(run)
    unterminated = run.rejected_rows()[2]["reason"]
    assert "Unterminated string" in unterminated
    assert " at at " not in unterminated


def test_json_column_non_object_values(tmp_path):
    lines = [
        "id,payload",  # 1
        '1,"{""name"": ""Ana"", ""dims"": {""w"": 2, ""h"": 3}}"',  # 2
        '2,"[1, 2, 3]"',  # 3
        '3,"""just text"""',  # 4
        '4,"{""name"": ""Bo"",',  # 5: one record over two lines
        '""dims"": {""w"": 5}}"',  # 6
        "5,42",  # 7
        '6,"{""name"": ""Cy"", ""dims"": }"',  # 8
        "7,",  # 9
        '8,"  {""name"": ""Di""}"',  # 10
    ]
    recipe = (
        "steps: [{step: extract_json, column: payload, "
        "fields: {name: name, width: dims.w, height: dims.h}}]\n"
    )

    run = run_step(tmp_path, {"payloads.csv": ("\n".join(lines) + "\n").encode()}, recipe)

    assert_succeeded(run)
    assert columns_of(run.rows("data.csv"), "id", "name", "width", "height") == [
        ("1", "Ana", "2", "3"),
        ("4", "Bo", "5", ""),
        ("7", "", "", ""),
        ("8", "Di", "", ""),
    ]
    rejected = run.rejected_rows()
    assert columns_of(rejected, "line", "value") == [
        ("3", "[1, 2, 3]"),
        ("4", '"just text"'),
        ("7", "42"),
        ("8", '{"name": "Cy", "dims": }'),
    ]
    for row in rejected[:3]:
        assert row["reason"].startswith("invalid JSON: "), row
        assert row["reason"].endswith(", not an object"), row
    assert rejected[3]["reason"] == "invalid JSON: Expecting value: line 1 column 24 (char 23)"


def test_json_schema_type_rejects_array(tmp_path):
    content = b'id,attrs\n1,"{""a"": 1}"\n2,"[{""a"": 2}]"\n3,\n'

    run = run_step(tmp_path, {"x.csv": content}, "schema: {columns: {attrs: {type: json}}}\n")

    assert_succeeded(run)
    assert columns_of(run.rows("data.csv"), "id", "attrs") == [("1", '{"a": 1}'), ("3", "")]
    (rejected,) = run.rejected_rows()
    assert columns_of([rejected], "line", "stage", "column", "value") == [
        ("3", "schema", "attrs", '[{"a": 2}]')
    ]
    assert rejected["reason"].endswith(", not an object")


# JSON Lines ------------------------------------------------------------------------------------


def test_json_lines_blank_and_broken(tmp_path):
    run = run_step(tmp_path, {"H46.jsonl": case_bytes("H46.jsonl")})

    assert_succeeded(run)
    assert columns_of(run.rows("processed_H46.csv"), "id", "v") == [
        ("1", "a"),
        ("2", "b"),
        ("4", "d"),
    ]
    (rejected,) = run.rejected_rows()
    assert rejected["source_file"] == "H46.jsonl"
    assert rejected["line"] == "4"
    assert rejected["stage"] == "read"
    assert rejected["reason"].startswith("invalid JSON: Expecting value")
    assert run.report_json()["rows"] == {"in": 4, "out": 3, "rejected": 1, "removed": 0}


JSON_LINES_CRLF = (
    b'\xef\xbb\xbf{"id": 1, "city": "Montr\xc3\xa9al"}\r\n'  # 1
    b"   \r\n"  # 2: whitespace only
    b"[1, 2]\r\n"  # 3
    b'{"id": 2, "city": "Oslo"}\r\n'  # 4
    b"42\r\n"  # 5
    b'{"id": 3, "city": \r\n'  # 6: the value is cut off
    b"\r\n"  # 7
    b'{"id": 4, "city": "Lima"}'  # 8: no line break at the end
)


def test_json_lines_crlf_bom_non_objects(tmp_path):
    run = run_step(tmp_path, {"events.ndjson": JSON_LINES_CRLF})

    assert_succeeded(run)
    assert run.header("processed_events.csv") == ["id", "city", "processed_timestamp"]
    assert columns_of(run.rows("processed_events.csv"), "id", "city") == [
        ("1", "Montréal"),
        ("2", "Oslo"),
        ("4", "Lima"),
    ]
    rejected = run.rejected_rows()
    assert [row["line"] for row in rejected] == ["3", "5", "6"]
    assert rejected[0]["reason"].endswith(", not an object")
    assert rejected[1]["reason"].endswith(", not an object")
    assert rejected[2]["reason"].startswith("invalid JSON: Expecting value")


def test_json_lines_rejected_text_without_line_end(tmp_path):
    run = run_step(tmp_path, {"events.ndjson": JSON_LINES_CRLF})

    assert_succeeded(run)
    assert [row["row"] for row in run.rejected_rows()] == [
        "[1, 2]",
        "42",
        '{"id": 3, "city": ',
    ]


def test_json_lines_error_column_in_line(tmp_path):
    run = run_step(tmp_path, {"events.ndjson": JSON_LINES_CRLF})

    assert_succeeded(run)
    broken = run.rejected_rows()[2]
    # The 18 characters of '{"id": 3, "city": ' end before the missing value, at column 19.
    assert broken["reason"] == "invalid JSON: Expecting value: line 1 column 19 (char 18)"
