"""Generate synthetic employee records as CSV for prepflow's examples, tests and benchmarks.

The columns, value formats and share of missing values per column follow the employee
sample that prepflow's reference preprocessing was written for. The header and row 2 of the
default output, with the profile shortened:

    id,name,age,salary,hire_date,profile,department,bonus
    2,Employee_891,36.0,60000,2025-05-19,"{""address"": ""Street 95, City 21"", ...}",HR,1056.0

A missing value is an empty field. ``id`` and ``name`` are never missing. Every value is
made up (names ``Employee_N``, phone numbers starting with 555, e-mail addresses at
example.com), so no row describes a real person.

Output is deterministic: the same seed and row count (or target size) give the same bytes.
Only ``random.Random.random()`` is used, because it is the one method whose sequence for a
given seed the Python documentation promises to keep across versions ("Notes on
Reproducibility" in the documentation of the random module).

Run ``python examples/data/generate_employees.py --help`` for the options. Tests can import
this file and call ``generate``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import TextIO

COLUMNS = ("id", "name", "age", "salary", "hire_date", "profile", "department", "bonus")

# Share of empty fields per column, measured on the 20,000-row sample this generator imitates
# and rounded to three decimals.
MISSING_RATES = {
    "age": 0.050,
    "salary": 0.324,
    "hire_date": 0.099,
    "profile": 0.102,
    "department": 0.200,
    "bonus": 0.100,
}
# Missing fields are placed by quota within each block of this many rows, so every whole
# block has exactly round(rate * BLOCK_ROWS) empty fields per column. Columns are drawn
# independently.
BLOCK_ROWS = 1000

DEFAULT_ROWS = 20_000
DEFAULT_SEED = 1729
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "employees.csv"

NAME_NUMBERS = 999
AGES = (18, 79)
SALARIES = ("50000", "60000", "70000")
HIRE_FIRST_DAY = date(2015, 7, 1)
HIRE_DAYS = 3653  # ten years, leap days included
STREET_NUMBERS = 100
CITY_NUMBERS = 50
EMAIL_NUMBERS = 1000
DEPARTMENTS = ("Finance", "HR", "IT", "Marketing")
BONUSES = (1000, 10000)

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


@dataclass
class Summary:
    """Counts and path of the file that one call of ``generate`` wrote."""

    path: Path
    seed: int
    rows: int = 0
    bytes: int = 0
    missing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    complete_rows: int = 0


def generate(
    output: Path | str = DEFAULT_OUTPUT,
    *,
    rows: int | None = None,
    size_bytes: int | None = None,
    seed: int = DEFAULT_SEED,
) -> Summary:
    """Write a CSV file of synthetic employees to ``output`` and return what was written.

    Give ``rows`` for an exact row count, or ``size_bytes`` to keep adding rows until the file
    (header included) reaches that size. The last row may pass that size by up to one row.
    With neither, DEFAULT_ROWS rows are written. Rows are streamed to disk, so memory use does
    not grow with the file. The file appears under its name only when complete, because it is
    written to a temporary file in the same folder and then renamed.
    """
    if rows is not None and size_bytes is not None:
        raise ValueError("give rows or size_bytes, not both")
    if rows is None and size_bytes is None:
        rows = DEFAULT_ROWS
    if rows is not None and rows < 0:
        raise ValueError(f"rows must be 0 or more, got {rows}")
    if size_bytes is not None and size_bytes < 0:
        raise ValueError(f"size_bytes must be 0 or more, got {size_bytes}")

    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = Summary(path=path, seed=seed)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with partial.open("x", encoding="ascii", newline="") as handle:
            _write_rows(handle, summary, rows=rows, size_bytes=size_bytes)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return summary


def _write_rows(
    handle: TextIO,
    summary: Summary,
    *,
    rows: int | None,
    size_bytes: int | None,
) -> None:
    # Every value is ASCII, so the character counts that writerow returns are byte counts.
    writer = csv.writer(handle, lineterminator="\n")
    summary.bytes = writer.writerow(COLUMNS)
    if rows == 0:
        return
    for row in iter_rows(seed=summary.seed, rows=rows):
        if size_bytes is not None and summary.bytes >= size_bytes:
            break
        summary.bytes += writer.writerow(row)
        summary.rows += 1
        empty = 0
        for column, value in zip(COLUMNS, row, strict=True):
            if value == "":
                summary.missing[column] += 1
                empty += 1
        if empty == 0:
            summary.complete_rows += 1


def iter_rows(*, seed: int = DEFAULT_SEED, rows: int | None = None) -> Iterator[list[str]]:
    """Yield rows as lists of strings in COLUMNS order, forever unless ``rows`` is given.

    Each block of BLOCK_ROWS rows gets round(rate * BLOCK_ROWS) empty fields per column. With
    ``rows`` given, the last block is shortened to the rows left and gets its own rounded
    quota, so the share of empty fields matches MISSING_RATES for any row count.
    """
    rng = random.Random(seed)
    next_id = 1
    while rows is None or next_id <= rows:
        block = BLOCK_ROWS if rows is None else min(BLOCK_ROWS, rows - next_id + 1)
        masks = [
            (COLUMNS.index(column), _missing_mask(rng, block, rate))
            for column, rate in MISSING_RATES.items()
        ]
        for position in range(block):
            row = _make_row(rng, next_id)
            for index, mask in masks:
                if mask[position]:
                    row[index] = ""
            yield row
            next_id += 1


def _make_row(rng: random.Random, row_id: int) -> list[str]:
    profile = {
        "address": f"Street {_pick(rng, 1, STREET_NUMBERS)}, City {_pick(rng, 1, CITY_NUMBERS)}",
        "phone": f"555{_pick(rng, 0, 9_999_999):07d}",
        "email": f"employee_{_pick(rng, 1, EMAIL_NUMBERS)}@example.com",
    }
    hire_date = date.fromordinal(HIRE_FIRST_DAY.toordinal() + _pick(rng, 0, HIRE_DAYS - 1))
    return [
        str(row_id),
        f"Employee_{_pick(rng, 1, NAME_NUMBERS)}",
        f"{float(_pick(rng, *AGES))}",
        SALARIES[_pick(rng, 0, len(SALARIES) - 1)],
        hire_date.isoformat(),
        json.dumps(profile),
        DEPARTMENTS[_pick(rng, 0, len(DEPARTMENTS) - 1)],
        f"{float(_pick(rng, *BONUSES))}",
    ]


def _missing_mask(rng: random.Random, length: int, rate: float) -> list[bool]:
    """Return ``length`` flags with exactly round(rate * length) of them True, shuffled."""
    count = round(rate * length)
    mask = [True] * count + [False] * (length - count)
    # Fisher-Yates shuffle using only rng.random(), because random.shuffle may change between
    # Python versions.
    for last in range(length - 1, 0, -1):
        other = int(rng.random() * (last + 1))
        mask[last], mask[other] = mask[other], mask[last]
    return mask


def _pick(rng: random.Random, low: int, high: int) -> int:
    """Return an integer from low to high inclusive."""
    return low + int(rng.random() * (high - low + 1))


def parse_size(text: str) -> int:
    """Parse a byte count such as ``1GiB``, ``500MB`` or ``4096``, with case-insensitive units."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in SIZE_UNITS:
        raise ValueError(
            f"invalid size {text!r}: expected a number of bytes with an optional unit "
            "(B, KiB, MiB, GiB, TiB, or kB, MB, GB, TB), for example 1GiB"
        )
    return int(Fraction(match.group(1)) * SIZE_UNITS[unit])


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _count_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid row count {text!r}: expected an integer >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a CSV file of synthetic employee records (id, name, age, salary, "
        "hire_date, profile, department, bonus) with missing values in every column but "
        "id and name.",
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--rows",
        type=_count_argument,
        default=None,
        help=f"number of data rows to write (default: {DEFAULT_ROWS})",
    )
    amount.add_argument(
        "--size",
        type=_size_argument,
        default=None,
        metavar="BYTES",
        help="write rows until the file reaches about this size, e.g. 1GiB or 500MB. Rows "
        "are streamed, so memory use stays flat",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of the random generator. The same seed gives the same file "
        f"(default: {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="CSV file to write, replaced if it exists (default: employees.csv next to "
        "this script)",
    )
    args = parser.parse_args(argv)

    summary = generate(args.output, rows=args.rows, size_bytes=args.size, seed=args.seed)
    print(
        f"wrote {summary.rows} rows ({summary.bytes} bytes, seed {summary.seed}) to "
        f"{summary.path}; {summary.complete_rows} rows have no missing value",
        file=sys.stderr,
    )
    for column in COLUMNS:
        count = summary.missing[column]
        share = count / summary.rows if summary.rows else 0.0
        print(f"  {column:<11} {count:>9} missing ({share:.2%})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
