"""The reference preprocessing: drop every row with a missing value, add ``processed_timestamp``.

It keeps the behaviour of the tutorial script prepflow grew from, which read each CSV with
pandas, called ``dropna()`` and wrote ``processed_<file name>``. A value counts as missing when
pandas' ``read_csv`` treats it as missing by default (an empty field, ``NA``, ``null``, ...),
so the same rows are dropped. Unlike that script, kept values are written exactly as they
were read: no float conversion turns ``60000`` into ``60000.0``.

When polars cannot read a file, the step reads it again, on that error path only, to name
the first line to fix in the ProcessingError.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from prepflow.errors import ProcessingError

logger = logging.getLogger(__name__)

# pandas.read_csv's default na_values (pandas 2.x, "na_values" in its read_csv documentation).
PANDAS_MISSING_TOKENS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
# Enough bytes to hold the first lines of any sensible CSV file.
LINE_ENDING_SAMPLE_BYTES = 65_536
TIMESTAMP_COLUMN = "processed_timestamp"
OUTPUT_PREFIX = "processed_"
# NAME_MAX on Linux file systems (ext4, xfs, tmpfs, overlayfs): bytes in one path component.
MAX_NAME_BYTES = 255
# Hex digits of the SHA-256 of the input name that keep shortened output names apart.
NAME_HASH_DIGITS = 8
# utf-8-sig drops a leading byte order mark, as polars 2.1 does for the header names.
TEXT_ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class FileResult:
    source: str
    output: str
    rows_in: int
    rows_out: int


def process_file(source: Path, target: Path, *, timestamp: datetime | None = None) -> FileResult:
    """Write ``source`` without its incomplete rows, plus a timestamp column, to ``target``.

    Raises ProcessingError for input the step rejects and for any OSError on either file.
    """
    frame = _drop_blank_lines(_read_input(source))
    complete = frame.filter(
        pl.all_horizontal(pl.all().is_not_null() & (pl.all() != "")) if frame.width else True
    )
    stamp = (timestamp or datetime.now(UTC)).isoformat(timespec="microseconds")
    result = complete.with_columns(pl.lit(stamp.replace("+00:00", "Z")).alias(TIMESTAMP_COLUMN))
    _write_output(result, target)
    logger.info("%s: %d rows in, %d rows out", source.name, frame.height, result.height)
    return FileResult(str(source), str(target), frame.height, result.height)


def output_name(source: Path) -> str:
    """Name the output of ``source``: ``processed_<name>``, shortened to fit MAX_NAME_BYTES.

    A shortened name keeps the suffix and puts ``~`` and the first NAME_HASH_DIGITS hex digits
    of the SHA-256 of the whole input name before it. Two long names that share their first
    bytes then get different outputs unless those digits match too, which ``plan_outputs`` in
    ``prepflow.processing.__main__`` rejects before any write.
    """
    name = OUTPUT_PREFIX + source.name
    if _encoded_size(name) <= MAX_NAME_BYTES:
        return name

    digest = hashlib.sha256(source.name.encode("utf-8", "surrogateescape")).hexdigest()
    marker = "~" + digest[:NAME_HASH_DIGITS]
    stem, suffix = os.path.splitext(source.name)
    if _encoded_size(OUTPUT_PREFIX + marker + suffix) > MAX_NAME_BYTES:
        stem, suffix = source.name, ""

    room = MAX_NAME_BYTES - _encoded_size(OUTPUT_PREFIX + marker + suffix)
    return OUTPUT_PREFIX + _cut_to_size(stem, room) + marker + suffix


def _encoded_size(text: str) -> int:
    # surrogateescape gives back the raw bytes of a file name that is not valid UTF-8.
    return len(text.encode("utf-8", "surrogateescape"))


def _cut_to_size(text: str, max_bytes: int) -> str:
    """Return the longest prefix of ``text`` that encodes to at most ``max_bytes`` bytes."""
    size = 0
    for index, character in enumerate(text):
        size += _encoded_size(character)
        if size > max_bytes:
            return text[:index]
    return text


def _drop_blank_lines(frame: pl.DataFrame) -> pl.DataFrame:
    """Remove the all-missing rows that polars reads from blank lines; pandas skips them.

    NOTE: a line of only delimiters (",,") reads the same way, so it is not counted in
    rows_in either, where pandas would count it and then drop it as incomplete.
    """
    if frame.width == 0:
        return frame
    return frame.filter(~pl.all_horizontal(pl.all().is_null()))


def _read_input(source: Path) -> pl.DataFrame:
    try:
        return _read_csv(source)
    except OSError as error:
        raise ProcessingError(
            f"cannot read {str(source)!r}: {_os_reason(error)}; check that the file exists "
            "and is readable"
        ) from error


def _read_csv(source: Path) -> pl.DataFrame:
    if source.stat().st_size == 0:
        raise ProcessingError(
            f"input file {source.name!r} is empty (0 bytes): nothing to process; upload a CSV "
            "file with a header row"
        )
    _check_line_endings(source)
    _check_header(source)

    try:
        frame = pl.read_csv(source, infer_schema=False, null_values=list(PANDAS_MISSING_TOKENS))
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as error:
        raise _unreadable(source, error) from error

    if TIMESTAMP_COLUMN in frame.columns:
        raise ProcessingError(
            f"input file {source.name!r} already has a {TIMESTAMP_COLUMN!r} column, which "
            "the step would overwrite; rename that column or upload the raw file"
        )
    return frame


def _check_line_endings(source: Path) -> None:
    """Reject CR-only line endings (classic Mac OS), which polars reads as one long line."""
    with source.open("rb") as file:
        head = file.read(LINE_ENDING_SAMPLE_BYTES)
    if b"\r" in head and b"\n" not in head:
        raise ProcessingError(
            f"cannot read {source.name!r} as CSV: its lines end with a carriage return alone "
            "(CR); convert the file to LF or CRLF line endings and upload it again"
        )


def _check_header(source: Path) -> None:
    """Reject duplicate column names, which polars would rename to ``<name>_duplicated_0``."""
    try:
        with source.open(encoding=TEXT_ENCODING, newline="") as file:
            header = _first_record(csv.reader(file))
    except (csv.Error, UnicodeDecodeError) as error:
        raise _unreadable(source, error) from error

    positions: defaultdict[str, list[int]] = defaultdict(list)
    for position, name in enumerate(header, start=1):
        positions[name].append(position)
    duplicates = [
        f"{name!r} at columns {_join_numbers(numbers)}"
        for name, numbers in positions.items()
        if len(numbers) > 1
    ]
    if duplicates:
        raise ProcessingError(
            f"duplicate column names in {source.name!r}: {', '.join(duplicates)}; rename "
            "them so each column has one name"
        )


def _first_record(reader: Iterator[list[str]]) -> list[str]:
    # polars skips blank lines before the header; csv.reader returns them as empty records.
    return next((record for record in reader if record), [])


def _join_numbers(numbers: list[int]) -> str:
    words = [str(number) for number in numbers]
    return ", ".join(words[:-1]) + " and " + words[-1]


def _unreadable(source: Path, error: Exception) -> ProcessingError:
    """Build the error for a file that polars or csv could not read, naming the first bad line.

    Each search reads the whole file again, which is acceptable on this path only.
    """
    problem = _find_undecodable_line(source) or _find_long_record(source)
    if problem is None:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        problem = (
            f"{first_line}. Check that every row has as many fields as the header and that "
            "the file is UTF-8 text"
        )
    return ProcessingError(f"cannot read {source.name!r} as CSV: {problem}")


def _find_undecodable_line(source: Path) -> str | None:
    """Describe the first line that is not valid UTF-8, or return None when every line is.

    TODO: read the encoding a job declares; until then the step accepts UTF-8 only.
    """
    offset = 0
    with source.open("rb") as file:
        # A byte 0x0A never occurs inside a UTF-8 sequence, so splitting at it is safe.
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return (
                    f"line {number} is not valid UTF-8: {_describe_bytes(error)} at byte offset "
                    f"{offset + error.start} of the file cannot be decoded; the step reads "
                    "UTF-8 text only, so save the file as UTF-8 and upload it again"
                )
            offset += len(line)
    return None


def _describe_bytes(error: UnicodeDecodeError) -> str:
    bad = error.object[error.start : error.end]
    label = "byte" if len(bad) == 1 else "bytes"
    return label + " " + " ".join(f"0x{value:02X}" for value in bad)


def _find_long_record(source: Path) -> str | None:
    """Describe the first record with more fields than the header, or return None."""
    with source.open(encoding=TEXT_ENCODING, newline="") as file:
        reader = csv.reader(file)
        try:
            header = _first_record(reader)
            # line_num counts physical lines read, so quoted newlines move it on too.
            start_line = reader.line_num + 1
            for record in reader:
                if len(record) > len(header):
                    return (
                        f"line {start_line} has {len(record)} fields, expected {len(header)} "
                        f"(the header has {len(header)}); fix that row or remove it"
                    )
                start_line = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError):
            # Fall back to the generic message, which quotes the reader's own error.
            return None
    return None


def _write_output(frame: pl.DataFrame, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.write_csv(target)
    except OSError as error:
        _remove_partial_output(target)
        raise ProcessingError(
            f"cannot write {str(target)!r}: {_os_reason(error)}; check that the output folder "
            "is writable and has free space"
        ) from error


def _remove_partial_output(target: Path) -> None:
    # Only a regular file can be a half-written output, so a device or folder there stays.
    with contextlib.suppress(OSError):
        if target.is_file():
            target.unlink()


def _os_reason(error: OSError) -> str:
    # polars raises OSError with only a message, so strerror is None for its errors.
    return error.strerror or str(error)
