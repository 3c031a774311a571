"""Write processed rows (CSV, Parquet, JSON Lines; split and partitioned) and rejected rows.

Writers append batch by batch, so memory stays flat. Every file is opened on its first row, so a
split or partition without rows leaves no file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from prepflow.errors import ProcessingError, describe_write_error, is_no_space
from prepflow.processing.limits import bounded_lines
from prepflow.processing.lines import (
    SCAN_CHUNK_BYTES,
    is_line_mappable,
    map_record_lines,
    map_record_lines_exactly,
)
from prepflow.processing.paths import REJECTED_FILE
from prepflow.processing.readers import RECORD, BadRecord, Source, open_binary
from prepflow.processing.recipe import OutputOptions
from prepflow.processing.validate import COLUMN, REASON, VALUE

logger = logging.getLogger(__name__)

HIVE_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# NAME_MAX on Linux file systems: bytes in one path component.
MAX_NAME_BYTES = 255
# Rows per Parquet row group: large groups compress and read better than one per batch.
PARQUET_ROW_GROUP_ROWS = 131_072
# Writes queued for the writer thread before the producer waits; bounds the rows in memory.
WRITE_BACKLOG = 2
T = TypeVar("T")
EXTENSIONS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
# Cell starts that spreadsheet programs read as a formula (OWASP, "CSV Injection").
FORMULA_PATTERN = r"^[=+\-@\t\r]"
NUMBER_PATTERN = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
REJECTED_COLUMNS = ("source_file", "record", "stage", "column", "reason", "value", "row")
REJECTED_SCHEMA = pa.schema(
    [
        ("source_file", pa.large_string()),
        ("record", pa.int64()),
        ("stage", pa.large_string()),
        ("column", pa.large_string()),
        ("reason", pa.large_string()),
        ("value", pa.large_string()),
        ("row", pa.large_string()),
    ]
)


@dataclass
class _OpenFile:
    path: Path
    handle: IO[bytes] | None = None
    parquet: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    rows: int = 0
    # Parquet rows waiting to be written as one row group.
    pending: list[pl.DataFrame] = field(default_factory=list)
    pending_rows: int = 0


@dataclass
class OutputWriter:
    """Write one dataset: ``<base>.<ext>``, one file per split, each partition in a folder."""

    folder: Path
    options: OutputOptions
    base_name: str
    # Added to each file name (data-algo-2.csv) when the job's hosts share one output prefix.
    host: str | None = None
    files: dict[tuple[str | None, str | None], _OpenFile] = field(default_factory=dict)
    # Encoding and compressing run on one thread of their own, in order, while the caller
    # transforms the next batch.
    _thread: ThreadPoolExecutor | None = None
    _queued: deque[Future[None]] = field(default_factory=deque)

    def write(self, frame: pl.DataFrame, split: str | None = None) -> None:
        if frame.height == 0:
            return
        column = self.options.partition_by
        if column is None:
            self._append(frame, split, None)
            return
        for (value,), part in frame.partition_by(column, as_dict=True, maintain_order=True).items():
            self._append(part, split, _partition_folder(column, value))

    def ensure_file(self, columns: pl.Schema) -> None:
        """Write an empty output with the columns when no row arrived (header-only input)."""
        if not self.files:
            visible = {name: dtype for name, dtype in columns.items() if not name.startswith("__")}
            self._append(pl.DataFrame(schema=visible), None, None)

    def close(self) -> list[dict[str, Any]]:
        """Close every file; return name and row count of each, for the report."""
        self._wait_for_writes()
        outputs = []
        for entry in self.files.values():
            self._guarded(entry, partial(self._flush_parquet, entry))
            if entry.parquet is not None:
                entry.parquet.close()
            if entry.handle is not None:
                entry.handle.close()
            outputs.append({"path": str(entry.path.relative_to(self.folder)), "rows": entry.rows})
        return outputs

    def abort(self) -> None:
        """Close and delete every file, so a failed job leaves no partial output."""
        with contextlib.suppress(Exception):
            self.close()
        if self._thread is not None:
            self._thread.shutdown(cancel_futures=True)
        for entry in self.files.values():
            with contextlib.suppress(OSError):
                entry.path.unlink()

    def _append(self, frame: pl.DataFrame, split: str | None, partition: str | None) -> None:
        key = (split, partition)
        entry = self.files.get(key)
        if entry is None:
            entry = self._guarded(None, lambda: self._open(split, partition))
            self.files[key] = entry
        self._submit(partial(self._guarded, entry, partial(self._write_rows, entry, frame)))
        entry.rows += frame.height

    def _submit(self, write: Callable[[], None]) -> None:
        """Queue a write for the writer thread; raise the error of any write that failed."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="write")
        self._queued.append(self._thread.submit(write))
        while self._queued and (len(self._queued) > WRITE_BACKLOG or self._queued[0].done()):
            self._queued.popleft().result()

    def _wait_for_writes(self) -> None:
        try:
            while self._queued:
                self._queued.popleft().result()
        finally:
            if self._thread is not None:
                self._thread.shutdown()
                self._thread = None

    def _guarded(self, entry: _OpenFile | None, action: Callable[[], T]) -> T:
        """Run a file operation, turning an OSError into a ProcessingError that names the file."""
        try:
            return action()
        except OSError as error:
            target = entry.path if entry is not None else self.folder
            if is_no_space(error):
                raise ProcessingError(describe_write_error(error, target)) from error
            raise ProcessingError(
                f"cannot write {str(target)!r}: {error.strerror or error}; check that the "
                "output folder is writable and has free space"
            ) from error

    def _open(self, split: str | None, partition: str | None) -> _OpenFile:
        stem = split or self.base_name
        if self.host is not None:
            stem += f"-{self.host}"
        name = stem + EXTENSIONS[self.options.format]
        if self.options.compression == "gzip" and self.options.format != "parquet":
            name += ".gz"
        folder = self.folder / partition if partition else self.folder
        path = folder / name
        # A per-file output keeps its input's subfolder, so the name may contain one.
        path.parent.mkdir(parents=True, exist_ok=True)
        return _OpenFile(path)

    def _write_rows(self, entry: _OpenFile, frame: pl.DataFrame) -> None:
        if self.options.format == "parquet":
            entry.pending.append(frame)
            entry.pending_rows += frame.height
            if entry.pending_rows >= PARQUET_ROW_GROUP_ROWS or entry.parquet is None:
                self._flush_parquet(entry)
            return
        first = entry.handle is None
        if frame.width == 0:
            # No columns (an empty JSON array, say): the output is an empty file.
            entry.path.touch()
            return
        if entry.handle is None:
            # The handle stays open across batches and close() closes it.
            entry.handle = (
                cast(IO[bytes], gzip.open(entry.path, "wb", compresslevel=6))  # noqa: SIM115
                if self.options.compression == "gzip"
                else entry.path.open("wb")
            )
        if self.options.format == "csv":
            if self.options.escape_formulas:
                frame = escape_formula_cells(frame)
            frame.write_csv(entry.handle, include_header=first)
        else:
            frame.write_ndjson(entry.handle)

    def _flush_parquet(self, entry: _OpenFile) -> None:
        if not entry.pending:
            return
        table = pl.concat(entry.pending, how="vertical_relaxed").to_arrow()
        entry.pending, entry.pending_rows = [], 0
        if entry.parquet is None:
            entry.schema = table.schema
            codec = "none" if self.options.compression == "none" else self.options.compression
            entry.parquet = pq.ParquetWriter(entry.path, table.schema, compression=codec)
        assert entry.schema is not None
        entry.parquet.write_table(table.cast(entry.schema))


def _partition_folder(column: str, value: object) -> str:
    """Name a partition's folder Hive-style (``column=value``), as Athena, Spark and polars
    read it back: other characters than letters, digits and ``-_.~`` are %-escaped, a
    missing value is Hive's ``__HIVE_DEFAULT_PARTITION__``, and a name over NAME_MAX bytes is
    cut and given a hash of the whole value.
    """
    if value is None:
        return f"{column}={HIVE_NULL_PARTITION}"
    text = str(value)
    safe = "".join(c if c.isalnum() or c in "-_.~" else f"%{ord(c):02X}" for c in text)
    name = f"{column}={safe or '%00'}"
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return name.encode()[: MAX_NAME_BYTES - 17].decode(errors="ignore") + "~" + digest


def escape_formula_cells(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix with a single quote each text cell and column name a spreadsheet would run.

    Such cells start with one of FORMULA_STARTS (OWASP's list for CSV injection). A text that
    is a plain number (``-3``, ``+1.5e3``) is shown as that number, so it is left as it is;
    columns of numbers, dates and booleans are never changed.
    """
    text_types = (pl.String, pl.Categorical, pl.Enum)
    text_columns = [name for name, dtype in frame.schema.items() if isinstance(dtype, text_types)]
    escaped = frame.with_columns(_escaped(pl.col(name).cast(pl.String)) for name in text_columns)
    names = {name: _escaped_name(name) for name in frame.columns}
    if len(set(names.values())) != len(names):
        raise ProcessingError(
            f"escaping formulas would give two columns one name: {sorted(names.values())!r}; "
            "rename the columns that start with =, +, -, @, a tab or a carriage return"
        )
    return escaped.rename(names)


def _escaped(column: pl.Expr) -> pl.Expr:
    risky = column.str.contains(FORMULA_PATTERN) & ~column.str.contains(NUMBER_PATTERN)
    return pl.when(risky).then(pl.lit("'") + column).otherwise(column).name.keep()


def _escaped_name(name: str) -> str:
    risky = re.match(FORMULA_PATTERN, name) and not re.match(NUMBER_PATTERN, name)
    return "'" + name if risky else name


class RejectedWriter:
    """Collect rejected rows in a spill file; ``finish`` adds line numbers and writes CSV."""

    def __init__(
        self,
        folder: Path | None,
        spill: Path,
        *,
        escape_formulas: bool = False,
        file_name: str = REJECTED_FILE,
    ) -> None:
        self.folder = folder
        self.spill = spill
        self.file_name = file_name
        self.escape_formulas = escape_formulas
        self.writer: pq.ParquetWriter | None = None
        self.lock = threading.Lock()
        self.count = 0
        self.by_reason: dict[str, int] = {}
        self.by_source: dict[str, int] = {}

    def add(
        self, frame: pl.DataFrame, source: Source, stage: str, *, removed: bool = False
    ) -> None:
        """Add rows that carry RECORD, REASON, COLUMN and VALUE beside their data columns.

        ``removed`` marks rows a step removed on purpose: they are written, but counted as
        removed by the engine, not as rejected.
        """
        if frame.height == 0:
            return
        data = [name for name in frame.columns if not name.startswith("__")]
        row = (
            pl.struct([pl.col(name).cast(pl.String) for name in data]).struct.json_encode()
            if data
            else pl.lit("{}")
        )
        table = frame.select(
            pl.lit(source.name).alias("source_file"),
            pl.col(RECORD).cast(pl.Int64).alias("record"),
            pl.lit(stage).alias("stage"),
            pl.col(COLUMN).cast(pl.String).alias("column"),
            pl.col(REASON).cast(pl.String).alias("reason"),
            pl.col(VALUE).cast(pl.String).alias("value"),
            row.alias("row"),
        )
        self._append(table, counted=not removed)

    def add_records(self, source: Source, records: list[BadRecord]) -> None:
        """Add records the reader could not turn into rows (ragged rows, broken JSON)."""
        if not records:
            return
        table = pl.DataFrame(
            {
                "source_file": [source.name] * len(records),
                "record": [bad.record for bad in records],
                "stage": ["read"] * len(records),
                "column": [None] * len(records),
                "reason": [bad.reason for bad in records],
                "value": [None] * len(records),
                "row": [bad.text for bad in records],
            },
            schema={name: pl.Int64 if name == "record" else pl.String for name in REJECTED_COLUMNS},
        )
        self._append(table)

    def _append(self, table: pl.DataFrame, *, counted: bool = True) -> None:
        # The read-ahead thread adds schema rejects while this thread adds step rejects.
        with self.lock:
            self._append_unlocked(table, counted)

    def _append_unlocked(self, table: pl.DataFrame, counted: bool) -> None:
        if counted:
            reasons = table.group_by("reason").len()
            for reason, count in reasons.iter_rows():
                kind = _reason_kind(reason)
                self.by_reason[kind] = self.by_reason.get(kind, 0) + count
            for name, count in table.group_by("source_file").len().iter_rows():
                self.by_source[name] = self.by_source.get(name, 0) + count
            self.count += table.height
        arrow = table.to_arrow().cast(REJECTED_SCHEMA)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.spill, REJECTED_SCHEMA)
        self.writer.write_table(arrow)

    def finish(
        self, sources: list[Source], quote: str | None, delimiter: str, header: bool
    ) -> str | None:
        """Write ``rejected.csv`` with line numbers; return its name, or None without rows.

        Rows stay in the order they were found, which is file order within each pass: rows
        rejected by the reader and the schema first, then rows that steps rejected.
        ``row_number`` counts data rows from 1 (not the header, nor blank lines).
        """
        if self.writer is None:
            return None
        self.writer.close()
        self.writer = None
        if self.folder is None:
            return None
        rejected = pl.scan_parquet(self.spill)
        lines = _line_numbers(rejected, sources, quote, delimiter)
        self.folder.mkdir(parents=True, exist_ok=True)
        ordered = rejected.join(
            lines, on=["source_file", "record"], how="left", maintain_order="left"
        )
        offsets = pl.LazyFrame(
            {
                "source_file": [source.name for source in sources],
                "header_records": [
                    1 if header and source.format == "csv" else 0 for source in sources
                ],
            }
        )
        ordered = ordered.join(offsets, on="source_file", how="left", maintain_order="left")
        columns = ordered.select(
            "source_file",
            "line",
            (pl.col("record") - pl.col("header_records")).alias("row_number"),
            "stage",
            "column",
            "reason",
            "value",
            "row",
        )
        if self.escape_formulas:
            text = ("source_file", "stage", "column", "reason", "value", "row")
            columns = columns.with_columns(_escaped(pl.col(name)) for name in text)
        columns.sink_csv(self.folder / self.file_name)
        return self.file_name


def _reason_kind(reason: str) -> str:
    """Group reasons for the report: drop the part after the first colon (a parser message)."""
    return reason.split(":", 1)[0]


def _line_numbers(
    rejected: pl.LazyFrame, sources: list[Source], quote: str | None, delimiter: str
) -> pl.LazyFrame:
    frames = []
    for source in sources:
        records = (
            rejected.filter(pl.col("source_file") == source.name)
            .select(pl.col("record").drop_nulls().unique())
            .collect()["record"]
            .to_numpy()
        )
        if records.size == 0:
            continue
        numbers, lines = _map_records(source, records, quote, delimiter)
        frames.append(
            pl.DataFrame(
                {"source_file": source.name, "record": numbers, "line": lines},
                schema={"source_file": pl.String, "record": pl.Int64, "line": pl.Int64},
            )
        )
    empty = pl.DataFrame(schema={"source_file": pl.String, "record": pl.Int64, "line": pl.Int64})
    return pl.concat([empty, *frames]).lazy()


def _map_records(
    source: Source, records: np.ndarray[Any, Any], quote: str | None, delimiter: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if source.format == "jsonl":
        return _map_json_lines(source, records)
    if source.format != "csv" or not is_line_mappable(source.encoding):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    with open_binary(source) as file:
        chunks = iter(lambda: file.read(SCAN_CHUNK_BYTES), b"")
        numbers, lines, total = map_record_lines(chunks, records, quote=quote)
    if total == source.records_total:
        return numbers, lines
    logger.info(
        "%s: quotes inside unquoted fields; finding the lines of rejected rows with the csv "
        "module (%d records read, %d found by the fast scan)",
        source.name, source.records_total, total,
    )  # fmt: skip
    with open_binary(source) as raw:
        text = io.TextIOWrapper(
            raw, encoding=source.encoding or "utf-8", errors="replace", newline=""
        )
        return map_record_lines_exactly(text, records, delimiter=delimiter, quote=quote)


def _map_json_lines(
    source: Source, records: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Map JSON Lines records (non-blank lines, counted from 1) to their line numbers."""
    wanted = set(records.tolist())
    numbers: list[int] = []
    lines: list[int] = []
    record = 0
    with open_binary(source) as file:
        pieces = bounded_lines(file, source.limits.max_record_bytes)
        for line, (raw, _) in enumerate(pieces, start=1):
            if line == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            # Blank as the reader sees it: spaces and tabs only.
            if not raw.strip(b" \t\r\n"):
                continue
            record += 1
            if record in wanted:
                numbers.append(record)
                lines.append(line)
    return np.array(numbers, dtype=np.int64), np.array(lines, dtype=np.int64)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
