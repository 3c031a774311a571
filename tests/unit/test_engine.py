"""The engine in-process on small files: JSON decoded once, unique parts, ordered threads."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from prepflow.errors import ProcessingError
from prepflow.processing import engine as engine_module
from prepflow.processing.engine import Engine, EnginePaths, RunResult
from prepflow.processing.jsonfields import PREDECODED_PREFIX, Predecoded
from prepflow.processing.readers import ordered_map
from prepflow.processing.recipe import OutputOptions, parse_recipe
from prepflow.processing.steps import first_extractions
from prepflow.processing.writers import OutputWriter

STAMP = datetime(2026, 12, 5, tzinfo=UTC)

PROFILES = [
    '{"email": "a@example.com", "address": {"city": "Lyon"}, "tags": ["x", "y"]}',
    "",  # missing
    '{"email": "b@example.com", "address": {"city": "Oslo"}, "tags": []}',
    "not json",  # rejected
    "[1, 2]",  # rejected: not an object
    '{"email": 12, "address": {}, "tags": [1]}',
    '{"email": 1.5e3, "address": {"city": null}, "tags": null}',
]


def write_csv(folder: Path, rows: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.csv"
    pl.DataFrame(rows).write_csv(path)
    return path


def run_engine(tmp_path: Path, recipe_text: str, data: Path, tag: str) -> RunResult:
    work = tmp_path / f"work-{tag}"
    work.mkdir()
    paths = EnginePaths(
        input_files=[(data, data.name)],
        output_dir=tmp_path / f"out-{tag}",
        rejected_dir=tmp_path / f"rejected-{tag}",
        artifacts_dir=None,
        fitted_file=None,
        work_dir=work,
    )
    paths.output_dir.mkdir()
    return Engine(parse_recipe(recipe_text), paths, timestamp=STAMP).run()


def profile_rows() -> list[dict[str, str]]:
    return [
        {"id": str(number), "age": str(20 + number), "profile": text}
        for number, text in enumerate(PROFILES)
    ]


def extract_recipe(json_type: str, steps_before: str = "", output: str = "csv") -> str:
    return f"""
schema:
  columns:
    id: {{type: int}}
    age: {{type: float}}
    profile: {{type: {json_type}}}
steps:
{steps_before}  - step: extract_json
    column: profile
    fields: {{email: email, city: address.city, tags: tags}}
output: {{format: {output}}}
rejected: {{keep_removed: true}}
"""


def test_decoded_once_same_rows_as_step_alone(tmp_path):
    data = write_csv(tmp_path / "in", profile_rows())
    # Declared json: the schema check decodes the fields. Declared string: the step does.
    once = run_engine(tmp_path, extract_recipe("json"), data, "once")
    alone = run_engine(tmp_path, extract_recipe("string"), data, "alone")

    decoded = pl.read_csv(tmp_path / "out-once" / "data.csv", infer_schema=False)
    by_step = pl.read_csv(tmp_path / "out-alone" / "data.csv", infer_schema=False)
    assert decoded.columns == ["id", "age", "email", "city", "tags"]
    assert decoded.equals(by_step)
    assert decoded["email"].to_list() == ["a@example.com", None, "b@example.com", "12", "1500"]
    assert decoded["city"].to_list() == ["Lyon", None, "Oslo", None, None]
    assert decoded["tags"].to_list() == ['["x","y"]', None, "[]", "[1]", None]
    assert (once.rows_in, once.rows_out, once.rows_rejected) == (7, 5, 2)
    assert (alone.rows_out, alone.rows_rejected) == (5, 2)


def test_decoded_once_rejected_rows_keep_text(tmp_path):
    data = write_csv(tmp_path / "in", profile_rows())
    run_engine(tmp_path, extract_recipe("json"), data, "once")

    rejected = pl.read_csv(tmp_path / "rejected-once" / "rejected.csv", infer_schema=False)
    assert rejected["value"].to_list() == ["not json", "[1, 2]"]
    assert rejected["line"].to_list() == ["5", "6"]
    assert [json.loads(row)["profile"] for row in rejected["row"]] == ["not json", "[1, 2]"]
    assert rejected["reason"][1] == "invalid JSON: a JSON array, not an object"


def test_decoded_once_parquet_fields_are_text(tmp_path):
    rows = [{"id": "1", "age": "3", "profile": '{"email": "x@y.z", "address": {"city": "Rome"}}'}]
    data = write_csv(tmp_path / "in", rows)
    run_engine(tmp_path, extract_recipe("json", output="parquet"), data, "pq")

    frame = pl.read_parquet(tmp_path / "out-pq" / "data.parquet")
    assert frame.schema["email"] == pl.String
    assert frame.row(0, named=True) == {
        "id": 1,
        "age": 3.0,
        "email": "x@y.z",
        "city": "Rome",
        "tags": None,
    }
    assert not any(name.startswith(PREDECODED_PREFIX) for name in frame.columns)


def test_removed_rows_before_extract_keep_profile(tmp_path):
    rows = [
        {"id": "1", "age": "", "profile": '{"email": "gone@example.com"}'},
        {"id": "2", "age": "40", "profile": '{"email": "kept@example.com"}'},
    ]
    data = write_csv(tmp_path / "in", rows)
    before = "  - {step: drop_missing, columns: [age]}\n"
    result = run_engine(tmp_path, extract_recipe("json", before), data, "drop")

    assert result.rows_removed == 1
    removed = pl.read_csv(tmp_path / "rejected-drop" / "rejected.csv", infer_schema=False)
    assert json.loads(removed["row"][0])["profile"] == '{"email": "gone@example.com"}'
    out = pl.read_csv(tmp_path / "out-drop" / "data.csv", infer_schema=False)
    assert out["email"].to_list() == ["kept@example.com"]


WITHOUT_TEXT = Predecoded({"email": "email"}, keep_text=False)
WITH_TEXT = Predecoded({"email": "email"}, keep_text=True)


@pytest.mark.parametrize(
    ("before", "column_spec", "expected"),
    [
        ("", "{type: json}", WITHOUT_TEXT),
        ("  - {step: impute, columns: [age], strategy: median}\n", "{type: json}", WITHOUT_TEXT),
        ("  - {step: drop_missing}\n", "{type: json}", WITH_TEXT),
        ("  - {step: deduplicate}\n", "{type: json}", WITH_TEXT),
        ("", "{type: json, unique: true}", WITH_TEXT),
        ("  - {step: rename, columns: {profile: p}}\n", "{type: json}", None),
        ("  - {step: impute, columns: [profile], strategy: constant, value: '{}'}\n",
         "{type: json}", None),
        ("", "{type: json, on_invalid: set_missing}", None),
        ("", "{type: string}", None),
    ],
)  # fmt: skip
def test_first_extractions(before, column_spec, expected):
    recipe = parse_recipe(
        f"""
schema:
  columns:
    age: {{type: float}}
    profile: {column_spec}
steps:
{before}  - {{step: extract_json, column: profile, fields: [email]}}
"""
    )
    assert first_extractions(recipe).get("profile") == expected


def test_first_extractions_keeps_text_without_drop_source():
    recipe = parse_recipe(
        "schema: {columns: {p: {type: json}}}\n"
        "steps: [{step: extract_json, column: p, fields: [a], drop_source: false}]\n"
    )
    assert first_extractions(recipe) == {"p": Predecoded({"a": "a"}, keep_text=True)}


def test_unique_checked_in_parts(tmp_path, monkeypatch):
    # Parts of two rows: copies of a value must still meet in one part, and the first
    # copy in file order is the one kept.
    monkeypatch.setattr(engine_module, "UNIQUE_ROWS_PER_PART", 2)
    ids = ["5", "1", "5", "2", "3", "1", "4", "5", "6"]
    data = write_csv(tmp_path / "in", [{"id": value, "n": str(i)} for i, value in enumerate(ids)])
    recipe = """
schema: {columns: {id: {type: int, unique: true}, n: {type: int}}}
steps: [{step: impute, columns: [n], strategy: median}]
"""
    result = run_engine(tmp_path, recipe, data, "unique")

    out = pl.read_csv(tmp_path / "out-unique" / "data.csv")
    assert out["n"].to_list() == [0, 1, 3, 4, 6, 8]
    rejected = pl.read_csv(tmp_path / "rejected-unique" / "rejected.csv")
    assert rejected["line"].to_list() == [4, 7, 9]
    assert result.rows_rejected == 3


def test_ordered_map_keeps_order():
    def slow_for_small(value: int) -> int:
        time.sleep(0.02 if value % 2 == 0 else 0)
        return value * 10

    assert list(ordered_map(slow_for_small, iter(range(12)), workers=3)) == [
        value * 10 for value in range(12)
    ]


def test_ordered_map_raises_at_failed_item():
    def fail_on_four(value: int) -> int:
        if value == 4:
            raise ValueError("item 4")
        return value

    seen = []
    with pytest.raises(ValueError, match="item 4"):
        for value in ordered_map(fail_on_four, iter(range(10)), workers=2):
            seen.append(value)
    assert seen == [0, 1, 2, 3]


def test_ordered_map_runs_in_parallel():
    inside = [0]
    most = [0]
    lock = threading.Lock()
    release = threading.Event()

    def track(value: int) -> int:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            if inside[0] == 2:
                release.set()
        release.wait(timeout=5)
        with lock:
            inside[0] -= 1
        return value

    assert list(ordered_map(track, iter(range(6)), workers=2)) == list(range(6))
    assert most[0] == 2


def test_ordered_map_bounded_read_ahead():
    pulled = []

    def items():
        for value in range(100):
            pulled.append(value)
            yield value

    results = ordered_map(lambda value: value, items(), workers=2)
    assert next(results) == 0
    assert len(pulled) <= 4
    results.close()


def test_output_writer_thread_error_names_file(tmp_path):
    options = OutputOptions(format="parquet")
    (tmp_path / "data.parquet").mkdir()  # a folder where the file should go
    writer = OutputWriter(tmp_path, options, "data")

    with pytest.raises(ProcessingError, match=r"cannot write .*data\.parquet"):
        writer.write(pl.DataFrame({"a": [1, 2]}))
        writer.close()
    writer.abort()


def test_decoded_once_step_does_not_parse_again(tmp_path, monkeypatch):
    from prepflow.processing import steps

    def no_second_parse(*args, **kwargs):
        raise AssertionError("extract_json parsed a column the schema check decoded")

    monkeypatch.setattr(steps, "decode_fields", no_second_parse)
    monkeypatch.setattr(steps, "json_problems", no_second_parse)
    data = write_csv(tmp_path / "in", profile_rows())
    result = run_engine(tmp_path, extract_recipe("json"), data, "once")

    assert result.rows_out == 5


def test_literal_null_is_not_an_object(tmp_path):
    rows = [{"id": "1", "age": "2", "profile": "null"}, {"id": "2", "age": "3", "profile": "{}"}]
    data = write_csv(tmp_path / "in", rows)
    # Only empty cells are missing here, so "null" is a JSON value, and not an object.
    recipe = extract_recipe("json").replace("schema:", "input: {missing_values: ['']}\nschema:")
    result = run_engine(tmp_path, recipe, data, "null")

    assert (result.rows_out, result.rows_rejected) == (1, 1)
    rejected = pl.read_csv(tmp_path / "rejected-null" / "rejected.csv", infer_schema=False)
    assert rejected["reason"].to_list() == ["invalid JSON: a JSON null, not an object"]


def test_misspelled_schema_column_fails(tmp_path):
    data = write_csv(tmp_path / "in", [{"id": "1", "age": "abc"}])
    recipe = "schema: {columns: {id: {type: int}, agee: {type: int, max: 130}}}\n"

    with pytest.raises(ProcessingError) as raised:
        run_engine(tmp_path, recipe, data, "typo")

    assert "no column 'agee', did you mean 'age'?" in str(raised.value)


def test_absent_schema_column_added_missing(tmp_path):
    data = write_csv(tmp_path / "in", [{"id": "1", "name": "Ada"}])
    recipe = "schema: {columns: {id: {type: int}, salary: {type: float}}}\n"

    result = run_engine(tmp_path, recipe, data, "absent")

    out = pl.read_csv(tmp_path / "out-absent" / "data.csv", infer_schema=False)
    assert out.columns == ["id", "name", "salary"]
    assert out["salary"].to_list() == [None]
    assert result.rows_out == 1


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("array.csv", b' [ {"a": 1}, {"a": 2}]', "json"),
        ("lines.csv", b'{"a": 1}\n{"a": 2}\n', "jsonl"),
        ("plain.csv", b"a,b\n1,2\n", "csv"),
        ("bracket.csv", b"[id],name\n1,x\n", "csv"),
        ("brace.csv", b"{id},name\n1,x\n", "csv"),
    ],
)
def test_format_from_content(tmp_path, name, body, expected):
    from prepflow.processing.readers import detect
    from prepflow.processing.recipe import InputOptions

    path = tmp_path / name
    path.write_bytes(body)

    assert detect(path, name, InputOptions()).format == expected


def test_json_array_named_csv_processed(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    data = folder / "arr_named.csv"
    data.write_text('[{"a": 1, "b": 2}, {"a": 3, "b": null}, {"a": 5, "b": 6}]')

    result = run_engine(tmp_path, "steps: [{step: drop_missing}]\n", data, "json")

    assert (result.rows_in, result.rows_out) == (3, 2)
