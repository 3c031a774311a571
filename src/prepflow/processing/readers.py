"""Read input files as a stream of polars batches, with every unreadable record kept aside.

Formats are detected from magic bytes first (gzip, Parquet), then from the name and the first
character (JSON Lines, JSON array), and CSV otherwise. Gzip is unwrapped whatever the name.

Every batch carries ``__record``: the record's number in its file, counting the header of a CSV
file as record 1, as pyarrow's CSV reader does. A record that cannot become a row (too many or
too few fields, broken JSON) is returned as a ``BadRecord`` instead of stopping the read; the
caller turns record numbers into line numbers with ``prepflow.processing.lines``.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from prepflow.errors import ProcessingError
from prepflow.processing.limits import ReadLimits, bounded_lines, open_gzip
from prepflow.processing.lines import find_undecodable_line
from prepflow.processing.recipe import InputOptions

RECORD = "__record"
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
CSV_BLOCK_BYTES = 4 << 20
MIN_CSV_BLOCK_BYTES = 1 << 16
SMALL_FILE_BYTES = 1 << 16
JSON_BATCH_LINES = 65_536
COMPRESSED_SUFFIXES = (".gz", ".gzip")


@dataclass(frozen=True)
class BadRecord:
    record: int | None
    line: int | None
    reason: str
    text: str


@dataclass
class Source:
    """One input file, as detected."""

    path: Path
    name: str  # path relative to the input folder, for messages and the rejected rows
    format: str
    compression: str | None
    encoding: str | None
    bad_records: list[BadRecord] = field(default_factory=list)
    # Records the reader met, header included; set when the file has been read.
    records_total: int = 0
    limits: ReadLimits = field(default_factory=ReadLimits)


def detect(
    path: Path, name: str, options: InputOptions, limits: ReadLimits | None = None
) -> Source:
    """Find a file's format and compression from its first bytes, then its name."""
    head = _read_head(path)
    compression = "gzip" if head.startswith(GZIP_MAGIC) else None
    if compression:
        try:
            with gzip.open(path, "rb") as file:
                head = file.read(64)
        except (OSError, EOFError) as error:
            raise ProcessingError(
                f"input file {name!r} starts like gzip but cannot be decompressed: {error}; "
                "upload the file again"
            ) from error
    data_format: str = options.format
    if data_format == "auto":
        data_format = _guess_format(head, name, compression)
    if compression and data_format == "parquet":
        raise ProcessingError(f"input file {name!r} is gzip-compressed Parquet; upload it plain")
    encoding = None if data_format == "parquet" else options.encoding
    return Source(path, name, data_format, compression, encoding, limits=limits or ReadLimits())


def read_batches(
    source: Source, options: InputOptions, *, missing_values: tuple[str, ...] = ()
) -> Iterator[pl.DataFrame]:
    """Yield the file's rows in batches; bad records are appended to ``source.bad_records``.

    ``missing_values`` are turned into nulls by pyarrow's CSV parser, which is faster than
    doing it afterwards but loses the text, so the caller passes them only when no row can be
    rejected with its values as read. Other formats ignore them.
    """
    try:
        if source.format == "csv":
            yield from _read_csv(source, options, missing_values)
        elif source.format == "parquet":
            yield from _read_parquet(source)
        elif source.format == "jsonl":
            yield from _read_json_lines(source)
        else:
            yield from _read_json_array(source)
    except (OSError, EOFError) as error:
        # pyarrow and gzip raise these for a damaged or cut file, at any point of the read.
        raise _damaged(source, error) from error


def prefetched(batches: Iterator[pl.DataFrame], depth: int = 2) -> Iterator[pl.DataFrame]:
    """Read ahead on a thread, so parsing the next batch overlaps work on the current one.

    pyarrow releases the GIL while it parses. At most ``depth`` batches wait in memory, and
    an error in the reader is raised here, at the batch where it happened.
    """
    buffer: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        # Gives up once the consumer stopped, so the thread never blocks on a full queue.
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as error:
            put(("error", error))

    thread = threading.Thread(target=produce, name="reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = buffer.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


In = TypeVar("In")
Out = TypeVar("Out")


def ordered_map(
    function: Callable[[In], Out], items: Iterator[In], workers: int = 2
) -> Iterator[Out]:
    """Apply ``function`` to the items on ``workers`` threads and yield the results in order.

    For per-batch work that holds no state across batches, such as the schema checks: polars
    releases the GIL, so two batches are checked at once. At most ``workers + 1`` items are
    in flight, and an error is raised at the item where it happened.
    """
    if workers <= 1:
        yield from map(function, items)
        return
    pending: deque[Future[Out]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="check") as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(64)
    except OSError as error:
        raise ProcessingError(
            f"cannot read {str(path)!r}: {error.strerror or error}; check that the file is readable"
        ) from error


def _guess_format(head: bytes, name: str, compression: str | None) -> str:
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        lower = lower.removesuffix(suffix)
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if lower.endswith(".json"):
        return "json" if start[:1] == b"[" else "jsonl"
    # JSON saved under another name (data.csv holding an array of objects): a CSV header
    # does not start with '[{' or '{"', so the content decides.
    if start[:1] == b"[" and start[1:].lstrip(b" \t\r\n")[:1] == b"{":
        return "json"
    if start[:2] == b'{"':
        return "jsonl"
    return "csv"


def open_binary(source: Source) -> IO[bytes]:
    if source.compression == "gzip":
        return open_gzip(source.path, source.name, source.limits)
    return source.path.open("rb")


def _block_bytes(source: Source) -> int:
    # pyarrow fails on a record that does not fit in a block, so the block size is the record
    # limit. NOTE: a record up to about twice the block size may still pass, and limits below
    # MIN_CSV_BLOCK_BYTES are raised to it, since tiny blocks make parsing slow.
    return max(MIN_CSV_BLOCK_BYTES, source.limits.max_record_bytes)


# CSV ------------------------------------------------------------------------------------------


def _read_csv(
    source: Source, options: InputOptions, missing_values: tuple[str, ...]
) -> Iterator[pl.DataFrame]:
    if _is_empty(source):
        raise ProcessingError(
            f"input file {source.name!r} is empty (0 bytes): nothing to process; upload a CSV "
            "file with a header row"
        )
    collector = _BadRowCollector(source)
    reader = _open_csv_reader(source, options, collector, missing_values)
    names = reader.schema.names
    _check_column_names(source, names)
    first_record = 2 if options.header else 1
    next_record = first_record
    # One batch is held back, so the last record can be checked before it is passed on.
    held: pl.DataFrame | None = None
    try:
        for batch in _csv_batches(source, reader):
            numbers, next_record = collector.valid_numbers(next_record, batch.num_rows)
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            if held is not None:
                yield held
            held = frame.with_columns(pl.Series(RECORD, numbers, dtype=pl.Int64))
    finally:
        reader.close()
    collector.flush()
    if held is not None:
        yield _without_unterminated_quote(source, options, held)


def _without_unterminated_quote(
    source: Source, options: InputOptions, frame: pl.DataFrame
) -> pl.DataFrame:
    """Reject the last record when its quoted field never closes.

    pyarrow reads an unclosed quote as a field that runs to the end of the file, swallowing
    the records after it. Such a field contains a line break and ends with the file's last
    bytes, which a quoted field that does close cannot, because its closing quote follows it.
    """
    if options.quote is None or frame.height == 0 or source.compression is not None:
        return frame
    tail = _file_tail(source).rstrip("\r\n")
    if not tail or tail.endswith(options.quote):
        return frame
    last = frame.row(frame.height - 1, named=True)
    for name, value in last.items():
        if not isinstance(value, str) or ("\n" not in value and "\r" not in value):
            continue
        text = value.rstrip("\r\n")
        # The tail is the file's last 64 bytes, so either one may contain the other.
        if text.endswith(tail) or tail.endswith(text):
            fields = [
                options.quote + text if key == name else str(text or "")
                for key, text in last.items()
                if key != RECORD
            ]
            source.bad_records.append(
                BadRecord(
                    last[RECORD],
                    None,
                    f"unterminated quote in column {name!r}: the quoted value never closes, so "
                    "the rest of the file was read into it; close the quote",
                    options.delimiter.join(fields),
                )
            )
            return frame.head(frame.height - 1)
    return frame


def _file_tail(source: Source) -> str:
    with source.path.open("rb") as file:
        file.seek(max(source.path.stat().st_size - 64, 0))
        return file.read().decode(source.encoding or "utf-8", errors="ignore")


def csv_stream(source: Source) -> Any:
    """Open the file for pyarrow; a single line without a line break gets one.

    pyarrow 26 cannot find the columns of a one-line file that does not end with a line break
    (a header-only export, typically), so such a file, small by definition, is read from memory.
    """
    try:
        with open_binary(source) as file:
            head = file.read(SMALL_FILE_BYTES + 1)
    except (OSError, EOFError) as error:
        raise _damaged(source, error) from error
    if len(head) <= SMALL_FILE_BYTES and b"\n" not in head and b"\r" not in head:
        return pa.BufferReader(head + b"\n")
    if source.compression:
        # Decompressed in Python, so the ratio limit applies (as fast as pyarrow's own gzip
        # stream on a 100 MB CSV file).
        return pa.PythonFile(open_binary(source), mode="r")
    return pa.input_stream(str(source.path))


def _is_empty(source: Source) -> bool:
    try:
        with open_binary(source) as file:
            return file.read(1) == b""
    except (OSError, EOFError) as error:
        raise _damaged(source, error) from error


def _open_csv_reader(
    source: Source,
    options: InputOptions,
    collector: _BadRowCollector,
    missing_values: tuple[str, ...],
) -> pa_csv.CSVStreamingReader:
    read_options = pa_csv.ReadOptions(
        use_threads=False,  # keeps the record numbers of bad rows (pyarrow 26 drops them otherwise)
        block_size=_block_bytes(source),
        encoding=source.encoding or "utf-8",
        autogenerate_column_names=not options.header,
    )
    parse_options = pa_csv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote if options.quote is not None else False,
        newlines_in_values=True,
        invalid_row_handler=collector,
    )
    # Every column is read as text, so the schema, not a guess, decides each type.
    names = _header_names(source, options, read_options, parse_options)
    convert_options = pa_csv.ConvertOptions(
        column_types={name: pa.large_string() for name in names},
        null_values=list(missing_values),
        strings_can_be_null=bool(missing_values),
        quoted_strings_can_be_null=bool(missing_values),
    )
    stream = csv_stream(source)
    try:
        return pa_csv.open_csv(
            stream,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        stream.close()
        raise _unreadable_csv(source, error) from error


def _header_names(
    source: Source,
    options: InputOptions,
    read_options: pa_csv.ReadOptions,
    parse_options: pa_csv.ParseOptions,
) -> list[str]:
    # A first, tiny read learns the column names, which the text-only conversion needs.
    header_parse = pa_csv.ParseOptions(
        delimiter=parse_options.delimiter,
        quote_char=parse_options.quote_char,
        newlines_in_values=True,
        invalid_row_handler=lambda row: "skip",
    )
    stream = csv_stream(source)
    try:
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(
                use_threads=False,
                block_size=_block_bytes(source),
                encoding=read_options.encoding,
                autogenerate_column_names=not options.header,
            ),
            parse_options=header_parse,
            convert_options=pa_csv.ConvertOptions(
                column_types={}, include_columns=[], strings_can_be_null=False
            ),
        )
        names = list(reader.schema.names)
        reader.close()
        return names
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise _unreadable_csv(source, error) from error
    finally:
        stream.close()


def _csv_batches(source: Source, reader: pa_csv.CSVStreamingReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, UnicodeDecodeError) as error:
            raise _unreadable_csv(source, error) from error
        except (OSError, EOFError) as error:
            raise _damaged(source, error) from error
        if batch.num_rows:
            yield batch


def _check_column_names(source: Source, names: list[str]) -> None:
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(position)
    duplicates = [
        f"{name!r} at columns {_join_numbers(where)}"
        for name, where in positions.items()
        if len(where) > 1
    ]
    if duplicates:
        raise ProcessingError(
            f"duplicate column names in {source.name!r}: {'; '.join(duplicates)}; rename them "
            "so each column has one name"
        )
    unnamed = [str(position) for position, name in enumerate(names, start=1) if not name.strip()]
    if unnamed:
        raise ProcessingError(
            f"column(s) {', '.join(unnamed)} of {source.name!r} have no name in the header; "
            "give every column a name (a file of only blank lines has no header at all)"
        )
    reserved = [name for name in names if name.startswith("__")]
    if reserved:
        raise ProcessingError(
            f"column names starting with '__' are reserved for prepflow: {reserved!r} in "
            f"{source.name!r}; rename them"
        )


def _join_numbers(numbers: list[int]) -> str:
    words = [str(number) for number in numbers]
    return ", ".join(words[:-1]) + " and " + words[-1]


class _BadRowCollector:
    """The ``invalid_row_handler``: keeps each ragged row and has pyarrow skip it."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.pending: list[BadRecord] = []

    def __call__(self, row: Any) -> str:
        noun = "field" if row.actual_columns == 1 else "fields"
        reason = f"{row.actual_columns} {noun}, expected {row.expected_columns}"
        self.pending.append(BadRecord(row.number, None, reason, row.text))
        return "skip"

    def valid_numbers(self, start: int, count: int) -> tuple[np.ndarray[Any, Any], int]:
        """Number the ``count`` valid rows of the latest batch, skipping the bad records in it.

        pyarrow calls the handler while it parses a block, before it returns the block's rows,
        so the pending bad records belong to this batch or precede its rows.
        """
        taken = np.array(
            sorted(bad.record for bad in self.pending if bad.record is not None), dtype=np.int64
        )
        self.source.bad_records.extend(self.pending)
        self.pending = []
        end = start + count + len(taken)
        numbers = np.setdiff1d(np.arange(start, end, dtype=np.int64), taken, assume_unique=True)
        return numbers[:count], end

    def flush(self) -> None:
        self.source.bad_records.extend(self.pending)
        self.pending = []


def _damaged(source: Source, error: BaseException) -> ProcessingError:
    """Build the error for a file that cannot be read to its end, a cut gzip file for one."""
    what = "decompress" if source.compression else "read"
    return ProcessingError(
        f"cannot {what} {source.name!r}: {error}; the file is damaged or was cut short, so "
        "upload it again"
    )


def _unreadable_csv(source: Source, error: Exception) -> ProcessingError:
    if "straddling object" in str(error):
        # pyarrow's message for a record that does not fit in a block.
        return ProcessingError(source.limits.record_too_long(source.name, _first_long_line(source)))
    if isinstance(error, UnicodeDecodeError) or "UTF8" in str(error) or "utf8" in str(error):
        with open_binary(source) as file:
            problem = find_undecodable_line(file, source.encoding or "utf-8")
        if problem:
            return ProcessingError(f"cannot read {source.name!r}: {problem}")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return ProcessingError(
        f"cannot read {source.name!r} as CSV: {first_line}; check the delimiter, quote and "
        "encoding in the recipe's input section"
    )


def _first_long_line(source: Source) -> int | None:
    """Return the number of the first line longer than the record limit, if there is one."""
    with open_binary(source) as file:
        for number, (_, too_long) in enumerate(
            bounded_lines(file, source.limits.max_record_bytes), start=1
        ):
            if too_long:
                return number
    return None


# Parquet --------------------------------------------------------------------------------------


def _read_parquet(source: Source) -> Iterator[pl.DataFrame]:
    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ProcessingError(f"cannot read {source.name!r} as Parquet: {error}") from error
    _check_column_names(source, parquet.schema_arrow.names)
    next_record = 1
    for batch in parquet.iter_batches(batch_size=131_072):
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        numbers = np.arange(next_record, next_record + batch.num_rows, dtype=np.int64)
        next_record += batch.num_rows
        yield frame.with_columns(pl.Series(RECORD, numbers, dtype=pl.Int64))


# JSON -----------------------------------------------------------------------------------------


def _read_json_lines(source: Source) -> Iterator[pl.DataFrame]:
    """Read JSON Lines; a record's number is its position among the non-blank lines.

    A first pass collects every key, so that each batch has the same columns in the same
    order, whichever keys its records happen to have.
    """
    found = _json_lines(source)
    names = list(dict.fromkeys(key for *_, text, long in found if not long for key in _keys(text)))
    lines: list[tuple[int, int, str, bool]] = []
    for entry in _json_lines(source):
        lines.append(entry)
        if len(lines) >= JSON_BATCH_LINES:
            yield from _json_batch(source, lines, names)
            lines = []
    if lines:
        yield from _json_batch(source, lines, names)


def _keys(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return list(value) if isinstance(value, dict) else []


def _json_lines(source: Source) -> Iterator[tuple[int, int, str, bool]]:
    """Yield (record number, line number, text, oversized) of each non-blank line.

    The text of a line longer than the record limit is its first bytes only.
    """
    decoder = codecs.getincrementaldecoder(source.encoding or "utf-8")()
    record = 0
    with open_binary(source) as file:
        for line, (raw, oversized) in _lines_of(source, file):
            if oversized:
                record += 1
                preview = raw.decode(source.encoding or "utf-8", "replace")
                yield record, line, preview, True
                continue
            try:
                text = decoder.decode(raw)
            except UnicodeDecodeError as error:
                raise ProcessingError(
                    f"cannot read {source.name!r}: line {line} is not valid "
                    f"{source.encoding} text: {error.reason} at byte {error.start + 1} of the "
                    "line; save the file in the declared encoding"
                ) from error
            text = text.rstrip("\r\n")
            if line == 1:
                text = text.lstrip("\ufeff")
            if not text.strip(" \t"):
                continue
            record += 1
            yield record, line, text, False


def _lines_of(source: Source, file: IO[bytes]) -> Iterator[tuple[int, tuple[bytes, bool]]]:
    """Number the file's lines, turning a damaged file's error into a ProcessingError."""
    try:
        yield from enumerate(bounded_lines(file, source.limits.max_record_bytes), start=1)
    except (OSError, EOFError) as error:
        raise _damaged(source, error) from error


def _json_batch(
    source: Source, lines: list[tuple[int, int, str, bool]], names: list[str]
) -> Iterator[pl.DataFrame]:
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    for record, line, text, oversized in lines:
        if oversized:
            reason = source.limits.record_too_long(source.name, line)
            source.bad_records.append(BadRecord(record, line, reason, text + "..."))
            continue
        try:
            value = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as error:
            source.bad_records.append(BadRecord(record, line, f"invalid JSON: {error}", text))
            continue
        except _DuplicateKeyError as error:
            source.bad_records.append(BadRecord(record, line, str(error), text))
            continue
        if not isinstance(value, dict):
            reason = f"a JSON {json_type(value)}, not an object"
            source.bad_records.append(BadRecord(record, line, reason, text))
            continue
        records.append(value)
        numbers.append(record)
    if records:
        yield _records_frame(source, records, numbers, names)


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, rejecting a key given twice (json.loads would keep the last)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def json_type(value: object) -> str:
    """Name a parsed JSON value's type as JSON does (array, string, number)."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null"


def _read_json_array(source: Source) -> Iterator[pl.DataFrame]:
    # NOTE: a JSON array is parsed whole, so it needs memory for the whole file; use JSON Lines
    # for large inputs.
    try:
        with open_binary(source) as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise _damaged(source, error) from error
    try:
        value = json.loads(
            raw.decode(source.encoding or "utf-8").lstrip("\ufeff"), object_pairs_hook=_unique_keys
        )
    except UnicodeDecodeError as error:
        problem = find_undecodable_line(io.BytesIO(raw), source.encoding or "utf-8")
        raise ProcessingError(f"cannot read {source.name!r}: {problem or error}") from error
    except (json.JSONDecodeError, _DuplicateKeyError) as error:
        raise ProcessingError(f"cannot read {source.name!r} as JSON: {error}") from error
    if not isinstance(value, list):
        raise ProcessingError(
            f"{source.name!r} contains a JSON {json_type(value)}; the step reads a JSON array "
            "of objects or JSON Lines"
        )
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    for number, item in enumerate(value, start=1):
        if isinstance(item, dict):
            records.append(item)
            numbers.append(number)
        else:
            source.bad_records.append(
                BadRecord(
                    number,
                    None,
                    f"array element is a JSON {json_type(item)}, not an object",
                    json.dumps(item),
                )
            )
    if records:
        yield _records_frame(source, records, numbers)


def _records_frame(
    source: Source,
    records: list[dict[str, Any]],
    numbers: list[int],
    names: list[str] | None = None,
) -> pl.DataFrame:
    """Build a batch of text columns: JSON values as their JSON text, strings as they are.

    Types then come from the recipe's schema, as for CSV, so a column has the same type in
    every batch whatever values the batch happens to hold. ``names`` fixes the columns and
    their order; without it they are the records' keys in order of first appearance.
    """
    if names is None:
        names = list(dict.fromkeys(key for record in records for key in record))
    columns = {
        name: [_as_text(record[name]) if name in record else None for record in records]
        for name in names
    }
    _check_column_names(source, list(names))
    frame = pl.DataFrame(columns, schema=dict.fromkeys(names, pl.String))
    return frame.with_columns(pl.Series(RECORD, numbers, dtype=pl.Int64))


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
