"""Recipes run by the built-in step as a process, on real files, and through ``prepflow run``."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from prepflow.processing.recipe import PANDAS_MISSING_TOKENS
from tests.helpers import REPO_ROOT, SAMPLE_DATA, json_output, read_rows

EMPLOYEES_RECIPE = REPO_ROOT / "examples" / "recipes" / "employees.yaml"
SPLITS = ("train", "validation", "test")


def run_step(input_dir: Path, tmp_path: Path, *options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "prepflow.processing",
            "--input", str(input_dir),
            "--output", str(tmp_path / "out"),
            "--rejected", str(tmp_path / "rejected"),
            "--report", str(tmp_path / "report"),
            "--artifacts", str(tmp_path / "artifacts"),
            *map(str, options),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def folder_with(tmp_path: Path, name: str, content: bytes | str) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    (folder / name).write_bytes(data)
    return folder


def write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def report_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "report" / "report.json").read_text())


def read_splits(folder: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(folder / f"{name}.parquet") for name in SPLITS}


def count_missing(path: Path) -> dict[str, int]:
    """Count missing values per column with the csv module, as pandas' defaults define them."""
    tokens = set(PANDAS_MISSING_TOKENS)
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        counts = dict.fromkeys(reader.fieldnames or [], 0)
        for row in reader:
            for name, value in row.items():
                counts[name] += value in tokens
    return counts


@dataclass(frozen=True)
class EmployeesRun:
    source: Path  # the input file
    folder: Path  # the run's folders: out, rejected, report, artifacts


@pytest.fixture(params=["reference sample", "shipped sample"])
def employees_run(request: pytest.FixtureRequest, tmp_path_factory) -> EmployeesRun:
    """The employees recipe on the tutorial's sample, and on the shipped sample of the same
    shape, so the checks run even where the tutorial's file is absent."""
    if request.param == "reference sample":
        source = request.getfixturevalue("mock_data")
    else:
        source = SAMPLE_DATA
    tmp_path = tmp_path_factory.mktemp("employees")
    folder = folder_with(tmp_path, source.name, source.read_bytes())
    result = run_step(folder, tmp_path, "--recipe", EMPLOYEES_RECIPE)
    assert result.returncode == 0, result.stderr
    return EmployeesRun(source, tmp_path)


def first_profile(source: Path) -> tuple[int, dict[str, str]]:
    """Read the id and JSON profile of the first row that has one, independently of prepflow."""
    with source.open(newline="", encoding="utf-8") as file:
        row = next(row for row in csv.DictReader(file) if row["profile"].startswith("{"))
    return int(row["id"]), json.loads(row["profile"])


def test_employees_rows_accounted(employees_run):
    report = report_of(employees_run.folder)
    splits = read_splits(employees_run.folder / "out")
    written = sum(frame.height for frame in splits.values())

    assert report["rows"]["in"] == 20_000
    assert written == report["rows"]["out"]
    assert report["rows"]["out"] + report["rows"]["rejected"] == 20_000


def test_employees_imputed_columns_complete(employees_run):
    data = pl.concat(read_splits(employees_run.folder / "out").values())

    for name in ("age", "salary", "bonus", "department"):
        assert data[name].null_count() == 0, name
    assert "Unknown" in data["department"].to_list()


def test_employees_profile_expanded(employees_run):
    data = pl.concat(read_splits(employees_run.folder / "out").values())
    row_id, expected = first_profile(employees_run.source)

    assert {"address", "phone", "email"} <= set(data.columns)
    assert "profile" not in data.columns
    first = data.filter(pl.col("id") == row_id).row(0, named=True)
    assert first["address"] == expected["address"]
    assert first["phone"] == expected["phone"]
    assert first["email"] == expected["email"]


def test_employees_split_sizes(employees_run):
    splits = read_splits(employees_run.folder / "out")
    total = sum(frame.height for frame in splits.values())

    assert abs(splits["train"].height - 0.8 * total) <= 1
    assert abs(splits["validation"].height - 0.1 * total) <= 1
    assert abs(splits["test"].height - 0.1 * total) <= 1
    ids = pl.concat([frame["id"] for frame in splits.values()])
    assert ids.n_unique() == total


def test_employees_types(employees_run):
    train = read_splits(employees_run.folder / "out")["train"]

    assert train.schema["id"] == pl.Int64
    assert train.schema["age"] == pl.Float64
    assert train.schema["hire_date"] == pl.Date


def test_employees_report_missing_counts(employees_run):
    expected = count_missing(employees_run.source)
    columns = {column["name"]: column for column in report_of(employees_run.folder)["columns"]}

    for name, count in expected.items():
        assert columns[name]["missing_before"] == count, name
    assert columns["age"]["missing_after"] == 0
    assert columns["profile"]["missing_after"] is None


def test_employees_artifacts_written(employees_run):
    artifacts = json.loads((employees_run.folder / "artifacts" / "artifacts.json").read_text())
    steps = {step["index"]: step for step in artifacts["steps"]}

    ages = [
        float(row["age"])
        for row in csv.DictReader(employees_run.source.open(newline=""))
        if row["age"] not in PANDAS_MISSING_TOKENS
    ]
    ages.sort()
    middle = len(ages) // 2
    median = ages[middle] if len(ages) % 2 else (ages[middle - 1] + ages[middle]) / 2
    assert steps[1]["step"] == "impute"
    assert steps[1]["parameters"]["age"] == median
    assert steps[2]["parameters"] == {"department": "Unknown"}


def test_employees_report_html(employees_run):
    page = (employees_run.folder / "report" / "report.html").read_text()

    assert page.startswith("<!DOCTYPE html>")
    assert "hire_date" in page
    assert "https://" not in page


def test_applied_artifacts_same_values(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "schema:\n  columns:\n    x: {type: float}\n    k: {type: string}\n"
        "steps:\n"
        "  - {step: impute, columns: [x], strategy: median}\n"
        "  - {step: scale, columns: [x], method: standard}\n"
        "  - {step: one_hot, columns: [k]}\n"
        "output: {format: csv}\n",
    )
    training = tmp_path / "training"
    fitted_run = tmp_path / "fit"
    folder_with(training, "a.csv", "id,x,k\n1,1,a\n2,,b\n3,10,a\n4,4,c\n5,5,b\n")
    assert run_step(training / "in", fitted_run, "--recipe", recipe).returncode == 0
    fitted = fitted_run / "artifacts" / "artifacts.json"

    # Rows 1 and 2 again, among rows that would fit other parameters on their own.
    inference = tmp_path / "inference"
    applied_run = tmp_path / "apply"
    folder_with(inference, "b.csv", "id,x,k\n1,1,a\n2,,b\n9,1000,z\n")
    result = run_step(inference / "in", applied_run, "--recipe", recipe, "--fitted", fitted)

    assert result.returncode == 0, result.stderr
    before = {row["id"]: row for row in read_rows(fitted_run / "out" / "data.csv")}
    after = {row["id"]: row for row in read_rows(applied_run / "out" / "data.csv")}
    assert after["1"] == before["1"]
    assert after["2"] == before["2"]
    # An unseen category gets no column of its own: the vocabulary is the fitted one.
    assert "k_z" not in after["9"]
    assert (after["9"]["k_a"], after["9"]["k_b"], after["9"]["k_c"]) == ("0", "0", "0")
    assert (
        not (applied_run / "artifacts" / "artifacts.json").exists()
        or json.loads((applied_run / "artifacts" / "artifacts.json").read_text())["steps"]
        == json.loads(fitted.read_text())["steps"]
    )


def test_artifacts_of_other_recipe_rejected(tmp_path):
    recipe = write_recipe(tmp_path, "steps:\n  - {step: ordinal, columns: [k]}\n")
    fitted = tmp_path / "artifacts.json"
    fitted.write_text(json.dumps({"steps": [{"index": 1, "step": "scale", "parameters": {}}]}))
    folder = folder_with(tmp_path, "a.csv", "k\na\n")

    result = run_step(folder, tmp_path, "--recipe", recipe, "--fitted", fitted)

    assert result.returncode == 1
    assert "step 1 is 'ordinal' in the recipe but 'scale' in the artifacts" in result.stderr


def test_removed_rows_counted_and_kept(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "schema:\n  columns:\n    amount: {type: int}\n"
        "steps:\n"
        "  - {step: deduplicate, keys: [id]}\n"
        "  - {step: filter, where: 'amount >= 10'}\n"
        "rejected: {keep_removed: true}\n",
    )
    folder = folder_with(tmp_path, "a.csv", "id,amount\n1,5\n2,20\n2,30\n3,40\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    steps = report_of(tmp_path)["steps"]
    assert [(step["step"], step["removed"]) for step in steps] == [
        ("deduplicate", 1),
        ("filter", 1),
    ]
    rejected = read_rows(tmp_path / "rejected" / "rejected.csv")
    assert report_of(tmp_path)["rows"] == {"in": 4, "out": 2, "rejected": 0, "removed": 2}
    # Rows appear in the order they were removed: deduplicate runs before the filter.
    assert [(row["line"], row["stage"]) for row in rejected] == [("4", "step 1"), ("2", "step 2")]
    assert [row["id"] for row in read_rows(tmp_path / "out" / "data.csv")] == ["2", "3"]


def test_removed_rows_not_kept_by_default(tmp_path):
    folder = folder_with(tmp_path, "a.csv", "id,name\n1,\n2,Bo\n")

    result = run_step(folder, tmp_path)

    assert result.returncode == 0, result.stderr
    assert report_of(tmp_path)["rows"] == {"in": 2, "out": 1, "rejected": 0, "removed": 1}
    assert not (tmp_path / "rejected" / "rejected.csv").exists()


def test_invalid_values_rejected_with_line(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "schema:\n  columns:\n"
        "    id: {type: int, unique: true}\n"
        "    score: {type: float, min: 0, max: 10}\n"
        "    grade: {type: string, allowed: [A, B], on_invalid: set_missing}\n",
    )
    text = 'id,score,grade,note\n1,5,A,"two\nlines"\n2,eleven,B,x\n1,3,A,y\n4,11,C,z\n5,2,Q,w\n'
    folder = folder_with(tmp_path, "a.csv", text)

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    rejected = read_rows(tmp_path / "rejected" / "rejected.csv")
    found = [(row["line"], row["column"], row["reason"], row["value"]) for row in rejected]
    assert found == [
        ("4", "score", "invalid float", "eleven"),
        ("5", "id", "duplicate value in a unique column", "1"),
        ("6", "score", "above max 10.0", "11"),
    ]
    kept = read_rows(tmp_path / "out" / "data.csv")
    assert [(row["id"], row["grade"]) for row in kept] == [("1", "A"), ("5", "")]
    columns = {column["name"]: column for column in report_of(tmp_path)["columns"]}
    assert columns["grade"]["set_missing_as_invalid"] == 1


def test_partitioned_jsonl_gzip(tmp_path):
    recipe = write_recipe(
        tmp_path, "output: {format: jsonl, compression: gzip, partition_by: country}\n"
    )
    folder = folder_with(tmp_path, "a.csv", "id,country\n1,PT\n2,SE\n3,PT\n4,a/b\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    portugal = tmp_path / "out" / "country=PT" / "data.jsonl.gz"
    lines = gzip.decompress(portugal.read_bytes()).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["1", "3"]
    assert (tmp_path / "out" / "country=a%2Fb" / "data.jsonl.gz").is_file()


def test_files_combined_with_widening(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pl.DataFrame({"id": [1, 2], "x": [1, 2]}).write_parquet(folder / "a.parquet")
    pl.DataFrame({"id": [3], "x": [2.5]}).write_parquet(folder / "b.parquet")
    recipe = write_recipe(tmp_path, "output: {format: parquet}\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    data = pl.read_parquet(tmp_path / "out" / "data.parquet")
    assert data.schema["x"] == pl.Float64
    assert data["x"].to_list() == [1.0, 2.0, 2.5]


def test_incompatible_drift_fails(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pl.DataFrame({"id": [1], "x": [1]}).write_parquet(folder / "a.parquet")
    pl.DataFrame({"id": [2], "x": ["high"]}).write_parquet(folder / "b.parquet")
    recipe = write_recipe(tmp_path, "output: {format: parquet}\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 1
    assert "column 'x' is Int64 in 'a.parquet' but String in 'b.parquet'" in result.stderr
    assert not (tmp_path / "out" / "data.parquet").exists()


def test_invalid_recipe_before_data(tmp_path):
    recipe = write_recipe(tmp_path, "steps:\n  - {step: impute, columns: [a], strategy: medain}\n")
    folder = tmp_path / "missing-folder"

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 1
    assert "steps[0] (impute).strategy" in result.stderr
    assert "'medain'" in result.stderr
    assert "does not exist" not in result.stderr


def test_unknown_column_in_step(tmp_path):
    recipe = write_recipe(tmp_path, "steps:\n  - {step: drop_columns, columns: [nope]}\n")
    folder = folder_with(tmp_path, "a.csv", "id\n1\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 1
    assert "names column(s) 'nope' that the data does not have" in result.stderr


def test_run_with_recipe_end_to_end(cli, home, tmp_path):
    data = tmp_path / "people.csv"
    data.write_text("id,age\n1,30\n2,\n3,x\n")
    recipe = write_recipe(
        tmp_path,
        "schema:\n  columns:\n    age: {type: float}\n"
        "steps:\n  - {step: impute, columns: [age], strategy: mean}\n",
    )

    result = cli("run", "--recipe", str(recipe), str(data), "--json")

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    assert (job["rows_in"], job["rows_out"], job["rows_rejected"]) == (3, 2, 1)
    assert Path(job["report"]["path"]).name == "report.html"
    assert job["report"]["uri"].endswith(f"/reports/{job['job_name']}/report.html")
    rejected = read_rows(Path(job["rejected"]["path"]))
    assert [(row["line"], row["value"]) for row in rejected] == [("4", "x")]
    artifacts = next(home.glob(f"buckets/*model-artifacts*/artifacts/{job['job_name']}/*.json"))
    assert json.loads(artifacts.read_text())["steps"][0]["parameters"] == {"age": 30.0}


def test_run_applies_job_artifacts(cli, home, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text("id,age\n1,10\n2,30\n")
    fit = write_recipe(
        tmp_path,
        "schema:\n  columns:\n    age: {type: float}\n"
        "steps:\n  - {step: impute, columns: [age], strategy: mean}\n",
    )
    fitted_job = json_output(cli("run", "--recipe", str(fit), str(first), "--json"))[0]
    second = tmp_path / "second.csv"
    second.write_text("id,age\n3,\n4,100\n")
    apply = tmp_path / "apply.yaml"
    apply.write_text(fit.read_text() + f"artifacts: {{apply: {fitted_job['job_name']}}}\n")

    result = cli("run", "--recipe", str(apply), str(second), "--json")

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    output = Path(job["outputs"][0].replace("s3://", str(home / "buckets") + "/"))
    assert [row["age"] for row in read_rows(output)] == ["20.0", "100.0"]


def test_run_with_unknown_artifacts_job(cli, home, tmp_path):
    data = tmp_path / "a.csv"
    data.write_text("id\n1\n")
    recipe = write_recipe(tmp_path, "artifacts: {apply: prepflow-none-000000000000}\n")

    result = cli("run", "--recipe", str(recipe), str(data))

    assert result.returncode == 2
    assert "artifacts/prepflow-none-000000000000/artifacts.json does not exist" in result.stderr


def test_unique_across_files_spilled(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "schema:\n  columns:\n    id: {type: int, unique: true}\n    x: {type: float}\n"
        "steps:\n  - {step: impute, columns: [x], strategy: mean}\n"
        "output: {format: csv, split: {train: 0.5, test: 0.5, seed: 3}}\n",
    )
    folder = folder_with(tmp_path, "a.csv", "id,x\n1,1\n2,\n1,5\n,7\n")
    (folder / "b.csv").write_text("id,x\n3,3\n2,9\n,9\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    rejected = read_rows(tmp_path / "rejected" / "rejected.csv")
    found = [(row["source_file"], row["line"], row["column"], row["value"]) for row in rejected]
    assert found == [("a.csv", "4", "id", "1"), ("b.csv", "3", "id", "2")]
    kept = read_rows(tmp_path / "out" / "train.csv") + read_rows(tmp_path / "out" / "test.csv")
    assert sorted(row["id"] for row in kept) == ["", "", "1", "2", "3"]
    # The mean is fitted on the rows kept: 1, 7, 3 and 9 (the missing x is imputed).
    assert {row["id"]: row["x"] for row in kept if row["id"]}["2"] == "5.0"
    assert report_of(tmp_path)["rows"] == {"in": 7, "out": 5, "rejected": 2, "removed": 0}


def test_required_set_missing_still_rejects(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "schema:\n  columns:\n"
        "    id: {type: int, required: true, on_invalid: set_missing}\n"
        "    x: {type: float, on_invalid: set_missing}\n",
    )
    folder = folder_with(tmp_path, "a.csv", "id,x\n1,a\n,2\nzz,3\n4,5\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    rejected = read_rows(tmp_path / "rejected" / "rejected.csv")
    assert [(row["line"], row["reason"]) for row in rejected] == [
        ("3", "missing required value"),
        ("4", "invalid int"),
    ]
    assert [(row["id"], row["x"]) for row in read_rows(tmp_path / "out" / "data.csv")] == [
        ("1", ""),
        ("4", "5.0"),
    ]


def test_artifacts_of_other_strategy_rejected(tmp_path):
    folder = folder_with(tmp_path, "a.csv", "x\n1\n\n5\n6\n")
    median = write_recipe(
        tmp_path,
        "schema:\n  columns:\n    x: {type: float}\n"
        "steps:\n  - {step: impute, columns: [x], strategy: median}\n",
    )
    assert run_step(folder, tmp_path / "fit", "--recipe", median).returncode == 0
    mean = tmp_path / "mean.yaml"
    mean.write_text(median.read_text().replace("median", "mean"))
    fitted = tmp_path / "fit" / "artifacts" / "artifacts.json"

    result = run_step(folder, tmp_path / "apply", "--recipe", mean, "--fitted", fitted)

    assert result.returncode == 1
    assert "strategy=mean" in result.stderr
    assert "was fitted as" in result.stderr


def test_applied_parameters_in_report(tmp_path):
    folder = folder_with(tmp_path, "a.csv", "x\n1\n\n5\n")
    recipe = write_recipe(
        tmp_path,
        "schema:\n  columns:\n    x: {type: float}\n"
        "steps:\n  - {step: impute, columns: [x], strategy: mean}\n",
    )
    assert run_step(folder, tmp_path / "fit", "--recipe", recipe).returncode == 0
    fitted = tmp_path / "fit" / "artifacts" / "artifacts.json"

    result = run_step(folder, tmp_path, "--recipe", recipe, "--fitted", fitted)

    assert result.returncode == 0, result.stderr
    report = report_of(tmp_path)
    assert report["fitted"]["applied_from"] == str(fitted)
    assert report["fitted"]["steps"][0]["parameters"] == {"x": 3.0}


def test_stratified_split_after_impute(tmp_path):
    rows = "".join(f"{i},{'' if i % 7 == 0 else 'ab'[i % 2]}\n" for i in range(100))
    folder = folder_with(tmp_path, "a.csv", "id,g\n" + rows)
    recipe = write_recipe(
        tmp_path,
        "steps:\n  - {step: impute, columns: [g], strategy: mode}\n"
        "output: {split: {train: 0.5, test: 0.5, seed: 1, stratify: g}}\n",
    )

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    train = read_rows(tmp_path / "out" / "train.csv")
    test = read_rows(tmp_path / "out" / "test.csv")
    assert len(train) + len(test) == 100
    for group in ("a", "b"):
        in_train = sum(row["g"] == group for row in train)
        in_test = sum(row["g"] == group for row in test)
        assert abs(in_train - in_test) <= 1, group


def test_json_lines_keys_from_later_lines(tmp_path):
    lines = [json.dumps({"a": i, "b": f"x{i}"}) for i in range(70_000)]
    lines.append(json.dumps({"b": "last", "a": -1, "c": "extra"}))
    folder = folder_with(tmp_path, "a.jsonl", "\n".join(lines) + "\n")
    recipe = write_recipe(tmp_path, "output: {format: csv}\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out" / "data.csv")
    assert list(rows[0]) == ["a", "b", "c"]
    assert rows[-1] == {"a": "-1", "b": "last", "c": "extra"}
    assert rows[0] == {"a": "0", "b": "x0", "c": ""}


def test_per_file_stem_clash_rejected(tmp_path):
    folder = folder_with(tmp_path, "a.csv", "id\n1\n")
    (folder / "a.jsonl").write_text('{"id": 2}\n')

    result = run_step(folder, tmp_path)

    assert result.returncode == 1
    assert "input files 'a.csv' and 'a.jsonl' would both be written" in result.stderr


def test_impute_keeps_fraction_in_int_column(tmp_path):
    folder = folder_with(tmp_path, "a.csv", "n,k\n1,a\n,b\n4,c\n")
    recipe = write_recipe(
        tmp_path,
        "schema:\n  columns:\n    n: {type: int}\n"
        "steps:\n  - {step: impute, columns: [n], strategy: mean}\n",
    )

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    assert [row["n"] for row in read_rows(tmp_path / "out" / "data.csv")] == ["1.0", "2.5", "4.0"]


def test_parquet_fraction_not_an_int(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pl.DataFrame({"n": [2.5, 3.0, -1.7]}).write_parquet(folder / "a.parquet")
    recipe = write_recipe(tmp_path, "schema:\n  columns:\n    n: {type: int}\n")

    result = run_step(folder, tmp_path, "--recipe", recipe)

    assert result.returncode == 0, result.stderr
    assert [row["n"] for row in read_rows(tmp_path / "out" / "data.csv")] == ["3"]
    rejected = read_rows(tmp_path / "rejected" / "rejected.csv")
    assert [row["value"] for row in rejected] == ["2.5", "-1.7"]
