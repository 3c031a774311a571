"""Run prepflow's two recipes with pandas, as the baseline that bench/step_bench.py times.

``python bench/pandas_recipes.py default INPUT OUTPUT_DIR [--report]`` reads every column as
a string with pandas' default missing-value tokens, drops each row with a missing value, adds
one ``processed_timestamp`` (ISO 8601, UTC) to all rows and writes
``OUTPUT_DIR/processed_<name>``. With ``--report`` it also writes ``report.json``, as
prepflow's step does when given ``--report``.

``python bench/pandas_recipes.py employees INPUT OUTPUT_DIR [--seed N]`` writes
``train.parquet``, ``validation.parquet`` and ``test.parquet`` (80/10/10, random
permutation, zstd), ``rejected.csv`` (rows with an invalid value) and ``report.json``
(per-column statistics) to OUTPUT_DIR. See ``run_employees`` for the steps. The types,
checks, steps, compression and seed are copied by hand from examples/recipes/employees.yaml,
so a change there needs the same change here. Unlike prepflow's step, this script writes no
HTML report.

Both recipes call read_csv with ``dtype=str`` and otherwise its defaults: the C parser, no
pyarrow CSV engine and no chunked reading, so the whole file is in memory. pandas 3.1 parses
a local file of 5 MB or more in threads, one per usable core up to 6 (option
``mode.max_threads``). With pandas 3 and pyarrow installed, ``dtype=str`` stores the strings
in pyarrow arrays (``StringDtype`` with pyarrow storage).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

TIMESTAMP_COLUMN = "processed_timestamp"
OUTPUT_PREFIX = "processed_"

# Types of the employee columns. A non-missing value that does not parse as its type, or
# fails a check below, sends the row to rejected.csv.
INTEGER_COLUMNS = ("id",)
FLOAT_COLUMNS = ("age", "salary", "bonus")
DATE_COLUMNS = {"hire_date": "%Y-%m-%d"}
STRING_COLUMNS = ("name", "department")
JSON_COLUMN = "profile"
PROFILE_FIELDS = ("address", "phone", "email")
EMPLOYEE_COLUMNS = (
    *INTEGER_COLUMNS,
    *STRING_COLUMNS,
    *FLOAT_COLUMNS,
    *DATE_COLUMNS,
    JSON_COLUMN,
)
# Inclusive bounds, with None for no bound.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "age": (0, 130),
    "salary": (0, None),
    "bonus": (0, None),
}
REQUIRED_COLUMNS = ("id",)
# A repeated value is rejected in every row after the first that contains it.
UNIQUE_COLUMNS = ("id",)
MEDIAN_IMPUTED = FLOAT_COLUMNS
CONSTANT_IMPUTED = {"department": "Unknown"}
REJECT_REASON_COLUMN = "reject_reason"

SPLITS = {"train": 0.8, "validation": 0.1, "test": 0.1}
PARQUET_COMPRESSION = "zstd"
DEFAULT_SEED = 42
TOP_VALUES = 5


@dataclass(frozen=True)
class ParsedColumns:
    """Typed columns of the input, and for each row the reasons it is rejected ("" if none)."""

    typed: pd.DataFrame
    failures: pd.Series


def processing_timestamp() -> str:
    """Return the current UTC time as ISO 8601 with microseconds and a ``Z`` suffix."""
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def read_as_strings(source: Path) -> pd.DataFrame:
    """Read every column as a string. pandas' default tokens (``NA``, ``null``, ...) are missing."""
    return pd.read_csv(source, dtype=str)


# -- default recipe -------------------------------------------------------------------------


def run_default(source: Path, output_dir: Path, report: bool) -> dict[str, int]:
    """Drop incomplete rows, add the timestamp column and write ``processed_<name>``.

    With ``report``, also describe the kept rows' columns in report.json.
    """
    frame = read_as_strings(source)
    complete = frame.dropna()
    complete = complete.assign(**{TIMESTAMP_COLUMN: processing_timestamp()})
    output_dir.mkdir(parents=True, exist_ok=True)
    complete.to_csv(output_dir / (OUTPUT_PREFIX + source.name), index=False)
    if report:
        content = build_report(frame, complete, frame.isna().sum(), {})
        content["rows"] = {"in": len(frame), "out": len(complete)}
        (output_dir / "report.json").write_text(json.dumps(content, indent=2) + "\n")
    return {"rows_in": len(frame), "rows_out": len(complete)}


# -- employees recipe -----------------------------------------------------------------------


def run_employees(source: Path, output_dir: Path, seed: int) -> dict[str, int]:
    """Type, validate, impute, flatten, split and describe the employee file.

    The file is read as strings, and each column is parsed as its type. Rows with a value
    that does not parse or fails a check (RANGES, REQUIRED_COLUMNS, UNIQUE_COLUMNS) go to
    rejected.csv. Age, salary and bonus are filled with their
    medians over all accepted rows (before the split), and department with ``Unknown``.
    ``profile`` is replaced by its address, phone and email. Then the timestamp is added and
    the rows are split by a seeded permutation.
    """
    raw = read_as_strings(source)
    _check_columns(raw, source)
    missing_before = raw.isna().sum()

    parsed = parse_columns(raw)
    rejected = parsed.failures != ""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_rejected(raw, parsed.failures, output_dir / "rejected.csv")

    frame = parsed.typed[~rejected.to_numpy()]
    frame, fill_values = impute(frame)
    frame = frame.assign(**{TIMESTAMP_COLUMN: processing_timestamp()})
    splits = split_rows(frame, seed)
    for name, part in splits.items():
        part.to_parquet(
            output_dir / f"{name}.parquet",
            engine="pyarrow",
            compression=PARQUET_COMPRESSION,
            index=False,
        )

    report = build_report(raw, frame, missing_before, fill_values)
    report["rows"] = {
        "in": len(raw),
        "rejected": int(rejected.sum()),
        **{name: len(part) for name, part in splits.items()},
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return {"rows_in": len(raw), "rows_out": len(frame), "rows_rejected": int(rejected.sum())}


def _check_columns(raw: pd.DataFrame, source: Path) -> None:
    absent = [column for column in EMPLOYEE_COLUMNS if column not in raw.columns]
    if absent:
        raise SystemExit(
            f"{source}: missing columns {', '.join(absent)}. The employees recipe needs the "
            f"columns {', '.join(EMPLOYEE_COLUMNS)}"
        )


def parse_columns(raw: pd.DataFrame) -> ParsedColumns:
    """Parse each column as its type, run the checks, and record why rows fail.

    The profile's JSON becomes the address, phone and email columns. A profile that is not
    a JSON object is a failure. A missing profile, or a missing key, gives missing fields.
    """
    typed: dict[str, pd.Series] = {}
    # Keyed by reason, such as "age: not a number". True where that reason rejects the row.
    failed: dict[str, pd.Series] = {}
    for column in INTEGER_COLUMNS:
        numbers = pd.to_numeric(raw[column], errors="coerce")
        whole = numbers.notna() & (numbers % 1 == 0)
        failed[f"{column}: not an integer"] = raw[column].notna() & ~whole
        typed[column] = numbers.where(whole).astype("Int64")
    for column in STRING_COLUMNS:
        typed[column] = raw[column]
    for column in FLOAT_COLUMNS:
        typed[column] = pd.to_numeric(raw[column], errors="coerce").astype("float64")
        failed[f"{column}: not a number"] = raw[column].notna() & typed[column].isna()
    for column, date_format in DATE_COLUMNS.items():
        stamps = pd.to_datetime(raw[column], format=date_format, errors="coerce")
        failed[f"{column}: not a date in {date_format}"] = raw[column].notna() & stamps.isna()
        typed[column] = stamps.astype(pd.ArrowDtype(pa.date32()))

    profile, profile_failed = parse_profiles(raw[JSON_COLUMN])
    failed[f"{JSON_COLUMN}: not a JSON object"] = profile_failed
    typed.update({name: profile[name] for name in PROFILE_FIELDS})
    failed.update(check_values(raw, typed))

    # Input order, with the profile fields last. Columns the recipe does not type stay strings.
    order = [column for column in raw.columns if column != JSON_COLUMN] + list(PROFILE_FIELDS)
    frame = pd.DataFrame({column: typed.get(column, raw.get(column)) for column in order})
    return ParsedColumns(typed=frame, failures=_join_reasons(failed))


def check_values(raw: pd.DataFrame, typed: dict[str, pd.Series]) -> dict[str, pd.Series]:
    """Flag missing required values, repeated unique values and numbers out of range."""
    failed: dict[str, pd.Series] = {}
    for column in REQUIRED_COLUMNS:
        failed[f"{column}: missing"] = raw[column].isna()
    for column in UNIQUE_COLUMNS:
        values = typed[column]
        failed[f"{column}: duplicate"] = values.notna() & values.duplicated(keep="first")
    for column, (low, high) in RANGES.items():
        values = typed[column]
        outside = pd.Series(False, index=values.index)
        if low is not None:
            outside |= values < low
        if high is not None:
            outside |= values > high
        failed[f"{column}: out of range"] = outside
    return failed


def parse_profiles(texts: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """Parse the JSON profiles into PROFILE_FIELDS columns, and flag values that fail.

    Neither pandas 3.1 nor pyarrow 26 has a function that parses a column of JSON strings,
    so this calls json.loads once per value, as ``Series.map(json.loads)`` would, but with
    failures caught.
    """
    values: dict[str, list[object]] = {name: [] for name in PROFILE_FIELDS}
    failed: list[bool] = []
    for text in texts.to_numpy(dtype=object, na_value=None):
        profile = _load_object(text) if text is not None else {}
        failed.append(profile is None)
        for name in PROFILE_FIELDS:
            field = profile.get(name) if profile else None
            values[name].append(None if field is None else str(field))
    columns = {
        name: pd.Series(items, index=texts.index, dtype="str") for name, items in values.items()
    }
    return pd.DataFrame(columns), pd.Series(failed, index=texts.index)


def _load_object(text: str) -> dict[str, Any] | None:
    """Return the JSON object in ``text``, or None when it is invalid or not an object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _join_reasons(failed: dict[str, pd.Series]) -> pd.Series:
    """Join, per row, the reasons that reject it with ``; ``. A kept row gets ""."""
    reasons = pd.Series("", index=next(iter(failed.values())).index, dtype=object)
    for reason, mask in failed.items():
        if mask.any():
            separator = np.where(reasons == "", "", "; ")
            reasons = reasons.where(~mask, reasons + separator + reason)
    return reasons


def write_rejected(raw: pd.DataFrame, failures: pd.Series, target: Path) -> None:
    """Write the rejected rows as read, with their reasons in REJECT_REASON_COLUMN."""
    rejected = raw[(failures != "").to_numpy()]
    rejected = rejected.assign(**{REJECT_REASON_COLUMN: failures[failures != ""]})
    rejected.to_csv(target, index=False)


def impute(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """Fill MEDIAN_IMPUTED columns with their medians and CONSTANT_IMPUTED with constants."""
    fill_values: dict[str, object] = {column: frame[column].median() for column in MEDIAN_IMPUTED}
    fill_values.update(CONSTANT_IMPUTED)
    return frame.fillna(fill_values), fill_values


def split_rows(frame: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """Split rows 80/10/10 by a seeded random permutation. The last split takes the rest."""
    order = np.random.default_rng(seed).permutation(len(frame))
    splits: dict[str, pd.DataFrame] = {}
    start = 0
    names = list(SPLITS)
    for name in names:
        end = len(frame) if name == names[-1] else start + math.floor(SPLITS[name] * len(frame))
        splits[name] = frame.iloc[order[start:end]]
        start = end
    return splits


# -- report ---------------------------------------------------------------------------------


def build_report(
    raw: pd.DataFrame,
    frame: pd.DataFrame,
    missing_before: pd.Series,
    fill_values: dict[str, object],
) -> dict[str, Any]:
    """Describe each output column: missing counts, range, mean, quartiles, top values.

    ``missing_before`` counts over every row read, ``missing_after`` over the accepted rows
    after imputation. A profile field counts as missing before in the rows without a profile.
    """
    columns: dict[str, Any] = {}
    for column in frame.columns:
        source_column = JSON_COLUMN if column in PROFILE_FIELDS else column
        before = missing_before.get(source_column)
        columns[column] = {
            "missing_before": None if before is None else int(before),
            "missing_after": int(frame[column].isna().sum()),
            **describe(frame[column]),
        }
    return {
        "input_columns": list(raw.columns),
        "fill_values": {name: to_json(value) for name, value in fill_values.items()},
        "columns": columns,
    }


def describe(values: pd.Series) -> dict[str, Any]:
    """Count distinct and top values. Add min, max and quartiles for numbers and dates, and the
    mean for numbers."""
    counts = values.value_counts(dropna=True)
    summary: dict[str, Any] = {
        "distinct": len(counts),
        "top": [[to_json(value), int(count)] for value, count in counts.head(TOP_VALUES).items()],
    }
    ordered = pd.api.types.is_numeric_dtype(values) or isinstance(values.dtype, pd.ArrowDtype)
    if ordered and values.notna().any():
        quartiles = values.quantile([0.25, 0.5, 0.75]).tolist()
        summary.update(
            min=to_json(values.min()),
            max=to_json(values.max()),
            q25=to_json(quartiles[0]),
            q50=to_json(quartiles[1]),
            q75=to_json(quartiles[2]),
        )
    if pd.api.types.is_numeric_dtype(values) and values.notna().any():
        summary["mean"] = to_json(values.mean())
    return summary


def to_json(value: object) -> object:
    """Convert numpy and pandas scalars, and dates, to values json.dumps accepts."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


# -- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run prepflow's default or employees recipe with pandas, as a baseline."
    )
    parser.add_argument("recipe", choices=("default", "employees"), help="recipe to run")
    parser.add_argument("input", type=Path, help="CSV file to process")
    parser.add_argument("output_dir", type=Path, help="folder for the outputs, created if absent")
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of the train/validation/test permutation (default: {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="default recipe: also write report.json (the employees recipe always does)",
    )
    args = parser.parse_args(argv)
    if not args.input.is_file():
        parser.error(f"input file {str(args.input)!r} not found")

    started = time.perf_counter()
    recipes: dict[str, Callable[[], dict[str, int]]] = {
        "default": lambda: run_default(args.input, args.output_dir, args.report),
        "employees": lambda: run_employees(args.input, args.output_dir, args.seed),
    }
    counts = recipes[args.recipe]()
    counts_text = ", ".join(f"{name} {value:,}" for name, value in counts.items())
    elapsed = time.perf_counter() - started
    print(f"{args.recipe}: {counts_text} in {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
