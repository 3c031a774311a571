"""Write a large CSV file of synthetic employee records, fast and with flat memory use.

The columns, formats and missing-value rates imitate the 20,000-row employee sample that
prepflow's recipes are written for (measured with the csv module, rounded to three decimals):

    id,name,age,salary,hire_date,profile,department,bonus
    1,Name_103,77.0,60000,2024-03-31,"{""address"": ""Street 5, City 17"", ...}",IT,6842.0

``id`` counts from 1, ``name`` is never missing, and each other column is empty in an
independent random share of rows (MISSING_RATES). Every value is made up: names are
``Name_N``, phone numbers start with 555 and e-mail addresses are at example.com.

Rows are built a chunk at a time with numpy, without a Python loop over rows or fields.
Every possible value of a column is stored once, as bytes, in one pool. A chunk is a matrix
of (start, length) pairs into that pool, one pair per row and segment (a column, or a piece
of the profile), and one gather copies the chosen bytes into place. ``id`` and the phone
digits vary too much for a table, so each chunk computes their digits and appends them to
the pool for that chunk only.

Example: ``python bench/generate_mock.py --size 1GiB --seed 7 --output /tmp/bench-data/x.csv``
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

COLUMNS = ("id", "name", "age", "salary", "hire_date", "profile", "department", "bonus")
MISSING_RATES = {
    "age": 0.050,
    "salary": 0.324,
    "hire_date": 0.099,
    "profile": 0.102,
    "department": 0.200,
    "bonus": 0.100,
}
HEADER = (",".join(COLUMNS) + "\n").encode("ascii")

NAME_NUMBERS = range(1, 1000)
AGES = range(18, 80)
SALARIES = (50000, 60000, 70000)
HIRE_FIRST_DAY = date(2015, 7, 13)
HIRE_DAYS = 3653  # ten years to 2025-07-12, leap days included
STREET_NUMBERS = range(1, 101)
CITY_NUMBERS = range(1, 51)
PHONE_PREFIX = "555"
PHONE_DIGITS = 7  # after the prefix, so every number has ten digits as in the sample
EMAIL_NUMBERS = range(1, 1001)
DEPARTMENTS = ("Finance", "HR", "IT", "Marketing")
BONUSES = range(1000, 10001)

# Rows per numpy chunk. The gather index needs 8 bytes per output byte, so a chunk of about
# 4.5 MB of CSV uses about 40 MB of index. Changing it does not change the output.
CHUNK_ROWS = 32_768
ID_WIDTH = 12  # decimal digits, enough for any row count this script accepts
MAX_ROWS = 10**ID_WIDTH - 1

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}

IntArray = npt.NDArray[np.int64]
ByteArray = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Table:
    """The byte strings one segment of a row is chosen from, as starts and lengths in a pool.

    Entries from ``choices`` on (at most one) are the segment's text when its column is
    missing in a row.
    """

    starts: IntArray
    lengths: IntArray
    # Number of entries that random draws pick from.
    choices: int


@dataclass(frozen=True)
class Pool:
    """Every table's bytes end to end in one array, so one gather can assemble many rows."""

    data: ByteArray
    tables: dict[str, Table]


@dataclass
class Summary:
    """Counts and path of the file that one call of ``generate`` wrote."""

    path: Path
    seed: int
    rows: int = 0
    bytes: int = 0
    missing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    seconds: float = 0.0


@dataclass(frozen=True)
class Chunk:
    """Rendered CSV rows, with the end offset of each row in ``data`` to allow cutting."""

    data: ByteArray
    row_ends: IntArray
    missing: dict[str, npt.NDArray[np.bool_]]


# -- value tables ---------------------------------------------------------------------------


def build_pool() -> Pool:
    """Store every possible field value once, with the separators that follow it.

    Each column's entries end with the comma after the field (the newline for ``bonus``), so
    a missing value is the separator alone. The profile is split into three table segments
    and the phone digits. In a row without a profile all four are empty except the comma.
    """
    hire_dates = [HIRE_FIRST_DAY + timedelta(days=day) for day in range(HIRE_DAYS)]
    street = '"{""address"": ""Street '
    city = ', City {}"", ""phone"": ""' + PHONE_PREFIX
    email = '"", ""email"": ""email_{}@example.com""}}",'
    # Each entry: the values a column can take, and its text in a row where it is missing.
    values: dict[str, tuple[list[str], str | None]] = {
        "name": ([f"Name_{n}," for n in NAME_NUMBERS], None),
        "age": ([f"{float(age)}," for age in AGES], ","),
        "salary": ([f"{salary}," for salary in SALARIES], ","),
        "hire_date": ([f"{day.isoformat()}," for day in hire_dates], ","),
        "profile_street": ([street + str(n) for n in STREET_NUMBERS], ""),
        "profile_city": ([city.format(n) for n in CITY_NUMBERS], ""),
        "profile_email": ([email.format(n) for n in EMAIL_NUMBERS], ","),
        "department": ([f"{name}," for name in DEPARTMENTS], ","),
        "bonus": ([f"{float(bonus)}\n" for bonus in BONUSES], "\n"),
    }
    return _pack(values)


def _pack(values: dict[str, tuple[list[str], str | None]]) -> Pool:
    tables: dict[str, Table] = {}
    parts: list[bytes] = []
    offset = 0
    for name, (choices, missing) in values.items():
        entries = [text.encode("ascii") for text in choices]
        if missing is not None:
            entries.append(missing.encode("ascii"))
        lengths = np.array([len(entry) for entry in entries], dtype=np.int64)
        starts = offset + np.cumsum(lengths) - lengths
        tables[name] = Table(starts=starts, lengths=lengths, choices=len(choices))
        parts.extend(entries)
        offset += int(lengths.sum())
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    return Pool(data=data, tables=tables)


# -- one chunk ------------------------------------------------------------------------------


def render_chunk(rng: np.random.Generator, pool: Pool, first_id: int, rows: int) -> Chunk:
    """Draw ``rows`` random rows, with ids from ``first_id``, and render them as CSV bytes.

    The random draws happen in a fixed order, so for a given ``rows`` the bytes depend only
    on the generator's state.
    """
    missing = {column: rng.random(rows) < rate for column, rate in MISSING_RATES.items()}
    tables = pool.tables

    def pick(table_name: str, column: str | None) -> tuple[IntArray, IntArray]:
        table = tables[table_name]
        choice = rng.integers(0, table.choices, size=rows)
        if column is not None:
            choice = np.where(missing[column], table.choices, choice)
        return table.starts[choice], table.lengths[choice]

    id_bytes, id_segment = _id_segment(first_id, rows, base=len(pool.data))
    name = pick("name", None)
    age = pick("age", "age")
    salary = pick("salary", "salary")
    hire_date = pick("hire_date", "hire_date")
    street = pick("profile_street", "profile")
    city = pick("profile_city", "profile")
    phone_base = len(pool.data) + len(id_bytes)
    phone_bytes, phone_segment = _phone_segment(rng, missing["profile"], base=phone_base)
    email = pick("profile_email", "profile")
    department = pick("department", "department")
    bonus = pick("bonus", "bonus")

    segments = [
        id_segment,
        name,
        age,
        salary,
        hire_date,
        street,
        city,
        phone_segment,
        email,
        department,
        bonus,
    ]
    source = np.concatenate([pool.data, id_bytes, phone_bytes])
    data, row_ends = gather(source, segments)
    return Chunk(data=data, row_ends=row_ends, missing=missing)


def _id_segment(first_id: int, rows: int, base: int) -> tuple[ByteArray, tuple[IntArray, IntArray]]:
    """Render ids as right-aligned digits plus a comma, and point each row past its zeros."""
    ids = np.arange(first_id, first_id + rows, dtype=np.int64)
    width = ID_WIDTH + 1
    matrix = np.empty((rows, width), dtype=np.uint8)
    matrix[:, :ID_WIDTH] = decimal_digits(ids, ID_WIDTH)
    matrix[:, ID_WIDTH] = ord(",")
    # searchsorted counts the powers of ten (10, 100, ...) that are <= the id.
    powers = 10 ** np.arange(1, ID_WIDTH, dtype=np.int64)
    digit_counts = np.searchsorted(powers, ids, side="right") + 1
    starts = base + np.arange(rows, dtype=np.int64) * width + (ID_WIDTH - digit_counts)
    return matrix.ravel(), (starts, digit_counts + 1)


def _phone_segment(
    rng: np.random.Generator, missing: npt.NDArray[np.bool_], base: int
) -> tuple[ByteArray, tuple[IntArray, IntArray]]:
    rows = len(missing)
    numbers = rng.integers(0, 10**PHONE_DIGITS, size=rows)
    matrix = decimal_digits(numbers, PHONE_DIGITS)
    starts = base + np.arange(rows, dtype=np.int64) * PHONE_DIGITS
    lengths = np.where(missing, 0, PHONE_DIGITS).astype(np.int64)
    return matrix.ravel(), (starts, lengths)


def decimal_digits(values: IntArray, width: int) -> ByteArray:
    """Return a (len(values), width) matrix of ASCII digits, zero-padded on the left."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)


def gather(
    source: ByteArray, segments: Sequence[tuple[IntArray, IntArray]]
) -> tuple[ByteArray, IntArray]:
    """Concatenate, row by row, the byte ranges that ``segments`` select from ``source``.

    Each segment is a pair of arrays (start in ``source``, length) with one entry per row.
    Returns the bytes and the end offset of each row. Take a range that starts at output
    offset ``o`` and source offset ``s``: its output byte ``k`` comes from source byte
    ``k + (s - o)``. So np.repeat of ``s - o`` over the range lengths, plus an arange, gives
    the source index of every output byte.
    """
    starts = np.stack([start for start, _ in segments], axis=1).ravel()
    lengths = np.stack([length for _, length in segments], axis=1).ravel()
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    index = np.repeat(starts - (ends - lengths), lengths)
    index += np.arange(total, dtype=np.int64)
    row_ends = ends[len(segments) - 1 :: len(segments)]
    return source[index], row_ends


# -- the file -------------------------------------------------------------------------------


def generate(
    output: Path, *, seed: int, rows: int | None = None, size_bytes: int | None = None
) -> Summary:
    """Write ``rows`` rows, or rows until the file reaches ``size_bytes``, to ``output``.

    In size mode the last row may pass ``size_bytes`` by up to one row. A file of N rows is
    the first N rows of any longer file with the same seed, because every chunk is drawn in
    full before it is cut. The file is written under a temporary name in the same folder and
    renamed when complete, so a reader never sees a partial file under ``output``.

    NOTE: the same seed gives the same bytes only with the same numpy version, because numpy
    promises the same random stream only for the same build (numpy.random "Compatibility
    policy").
    """
    if (rows is None) == (size_bytes is None):
        raise ValueError("give exactly one of rows and size_bytes")
    if rows is not None and not 0 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be from 0 to {MAX_ROWS}, got {rows}")
    if size_bytes is not None and size_bytes < 0:
        raise ValueError(f"size_bytes must be 0 or more, got {size_bytes}")

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    summary = Summary(path=output, seed=seed)
    started = time.perf_counter()
    try:
        with partial.open("xb") as handle:
            _write_rows(handle, summary, rows=rows, size_bytes=size_bytes)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    summary.seconds = time.perf_counter() - started
    return summary


def _write_rows(
    handle: BinaryIO, summary: Summary, *, rows: int | None, size_bytes: int | None
) -> None:
    handle.write(HEADER)
    summary.bytes = len(HEADER)
    rng = np.random.default_rng(summary.seed)
    pool = build_pool()
    while _wants_more(summary, rows, size_bytes):
        chunk = render_chunk(rng, pool, first_id=summary.rows + 1, rows=CHUNK_ROWS)
        keep = _rows_to_keep(chunk, summary, rows, size_bytes)
        end = int(chunk.row_ends[keep - 1]) if keep else 0
        handle.write(chunk.data[:end].tobytes())
        summary.rows += keep
        summary.bytes += end
        for column, mask in chunk.missing.items():
            summary.missing[column] += int(mask[:keep].sum())


def _wants_more(summary: Summary, rows: int | None, size_bytes: int | None) -> bool:
    if rows is not None:
        return summary.rows < rows
    assert size_bytes is not None
    return summary.bytes < size_bytes


def _rows_to_keep(chunk: Chunk, summary: Summary, rows: int | None, size_bytes: int | None) -> int:
    """Count the chunk's rows to write: all, or up to the row that reaches the target."""
    if rows is not None:
        return min(len(chunk.row_ends), rows - summary.rows)
    assert size_bytes is not None
    needed = size_bytes - summary.bytes
    # The first row whose end reaches the target is the last one written.
    reaching = int(np.searchsorted(chunk.row_ends, needed, side="left"))
    return min(reaching + 1, len(chunk.row_ends))


# -- command line ---------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Parse a byte count such as ``1GiB``, ``100MiB``, ``500MB`` or ``4096``.

    Units are case-insensitive: KiB, MiB and GiB are powers of 1024, kB, MB and GB powers of
    1000.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in SIZE_UNITS:
        raise ValueError(
            f"invalid size {text!r}: expected a number with an optional unit (B, KiB, MiB, "
            "GiB, kB, MB, GB), for example 1GiB"
        )
    return int(Fraction(match.group(1)) * SIZE_UNITS[unit])


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _rows_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_ROWS:
        raise argparse.ArgumentTypeError(
            f"invalid row count {text!r}: expected an integer from 0 to {MAX_ROWS}"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a CSV file of synthetic employee records shaped like prepflow's "
        "20,000-row sample. The same seed and --size (or --rows), with the same numpy "
        "version, give a byte-identical file.",
    )
    amount = parser.add_mutually_exclusive_group(required=True)
    amount.add_argument("--rows", type=_rows_argument, help="number of data rows to write")
    amount.add_argument(
        "--size",
        type=_size_argument,
        metavar="BYTES",
        help="write rows until the file reaches this size (e.g. 100MiB, 1GiB). The last "
        "row may pass it by up to one row",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    parser.add_argument(
        "--output", type=Path, required=True, help="CSV file to write, replaced if it exists"
    )
    args = parser.parse_args(argv)

    summary = generate(args.output, seed=args.seed, rows=args.rows, size_bytes=args.size)
    rate = summary.bytes / summary.seconds / 1024**2 if summary.seconds else 0.0
    print(
        f"wrote {summary.rows:,} rows, {summary.bytes:,} bytes (seed {summary.seed}) to "
        f"{summary.path} in {summary.seconds:.1f} s ({rate:.0f} MiB/s)",
        file=sys.stderr,
    )
    for column in COLUMNS:
        count = summary.missing[column]
        share = count / summary.rows if summary.rows else 0.0
        print(f"  {column:<11} {count:>11,} missing ({share:.2%})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
