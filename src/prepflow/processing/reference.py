"""The reference preprocessing: drop every row with a missing value, add ``processed_timestamp``.

It keeps the behaviour of the tutorial script prepflow grew from, which read each CSV with
pandas, called ``dropna()`` and wrote ``processed_<file name>``. A value counts as missing when
pandas' ``read_csv`` treats it as missing by default (an empty field, ``NA``, ``null``, ...),
so the same rows are dropped. Unlike that script, kept values are written exactly as they
were read: no float conversion turns ``60000`` into ``60000.0``.
"""

from __future__ import annotations

import logging
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
TIMESTAMP_COLUMN = "processed_timestamp"
OUTPUT_PREFIX = "processed_"


@dataclass(frozen=True)
class FileResult:
    source: str
    output: str
    rows_in: int
    rows_out: int


def process_file(source: Path, target: Path, *, timestamp: datetime | None = None) -> FileResult:
    """Write ``source`` without its incomplete rows, plus a timestamp column, to ``target``."""
    frame = _drop_blank_lines(_read_csv(source))
    complete = frame.filter(
        pl.all_horizontal(pl.all().is_not_null() & (pl.all() != "")) if frame.width else True
    )
    stamp = (timestamp or datetime.now(UTC)).isoformat(timespec="microseconds")
    result = complete.with_columns(pl.lit(stamp.replace("+00:00", "Z")).alias(TIMESTAMP_COLUMN))
    target.parent.mkdir(parents=True, exist_ok=True)
    result.write_csv(target)
    logger.info("%s: %d rows in, %d rows out", source.name, frame.height, result.height)
    return FileResult(str(source), str(target), frame.height, result.height)


def output_name(source: Path) -> str:
    return OUTPUT_PREFIX + source.name


def _drop_blank_lines(frame: pl.DataFrame) -> pl.DataFrame:
    """Remove the all-missing rows that polars reads from blank lines; pandas skips them.

    NOTE: a line of only delimiters (",,") reads the same way, so it is not counted in
    rows_in either, where pandas would count it and then drop it as incomplete.
    """
    if frame.width == 0:
        return frame
    return frame.filter(~pl.all_horizontal(pl.all().is_null()))


def _read_csv(source: Path) -> pl.DataFrame:
    if source.stat().st_size == 0:
        raise ProcessingError(
            f"input file {source.name!r} is empty (0 bytes): nothing to process; upload a CSV "
            "file with a header row"
        )
    try:
        frame = pl.read_csv(source, infer_schema=False, null_values=list(PANDAS_MISSING_TOKENS))
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ProcessingError(
            f"cannot read {source.name!r} as CSV: {first_line}. Check that every row has as "
            "many fields as the header and that the file is UTF-8 text"
        ) from error
    if TIMESTAMP_COLUMN in frame.columns:
        raise ProcessingError(
            f"input file {source.name!r} already has a {TIMESTAMP_COLUMN!r} column, which "
            "the step would overwrite; rename that column or upload the raw file"
        )
    return frame
