"""Line numbers for messages: the line a CSV record starts on, and the first undecodable line.

The CSV reader counts records, not lines: a quoted field can hold line breaks, and blank lines
are skipped. ``record_start_lines`` scans the raw bytes once, with numpy, to map record numbers
back to the physical line where each record starts. It runs only when some rows are rejected.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable
from typing import IO, Any

import numpy as np

SCAN_CHUNK_BYTES = 16 << 20
NEWLINE = 0x0A
CARRIAGE_RETURN = 0x0D


def find_undecodable_line(file: IO[bytes], encoding: str) -> str | None:
    """Describe the first line that ``encoding`` cannot decode, or return None."""
    if not is_line_mappable(encoding):
        return _find_undecodable_offset(file, encoding)
    offset = 0
    # Splitting at 0x0A is safe for UTF-8 and the single-byte code pages, where that byte is
    # always a line feed and never part of a longer sequence.
    for number, line in enumerate(file, start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as error:
            bad = error.object[error.start : error.end]
            shown = " ".join(f"0x{value:02X}" for value in bad)
            return (
                f"line {number} is not valid {encoding}: byte(s) {shown} at byte offset "
                f"{offset + error.start} of the file cannot be decoded; "
                + (
                    "save the file as UTF-8 or declare its encoding in the recipe (input.encoding)"
                    if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
                    else f"check that {encoding}, the encoding the recipe declares, is the "
                    "file's encoding"
                )
            )
        offset += len(line)
    return None


def _find_undecodable_offset(file: IO[bytes], encoding: str) -> str | None:
    """Describe the first undecodable bytes of an encoding whose line breaks are not 0x0A."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    for chunk in iter(lambda: file.read(1 << 20), b""):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as error:
            return (
                f"the data is not valid {encoding}: bytes near byte offset {offset} of the file "
                f"cannot be decoded ({error.reason}); save the file in the declared encoding"
            )
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        return f"the data is not valid {encoding}: it ends inside a character ({error.reason})"
    return None


def is_line_mappable(encoding: str | None) -> bool:
    """Tell whether line feeds and quotes are single ASCII bytes in ``encoding``."""
    if encoding is None:
        return False
    try:
        name = codecs.lookup(encoding).name
        # utf-8-sig writes a byte order mark first, but its other bytes are UTF-8.
        return '\n,"\r'.encode("utf-8" if name == "utf-8-sig" else name) == b'\n,"\r'
    except (LookupError, UnicodeEncodeError):
        return False


def record_start_lines(
    chunks: Iterable[bytes], records: Iterable[int], *, quote: str | None, header: bool
) -> dict[int, int]:
    """Map record numbers (as pyarrow counts them: non-blank records, header first) to lines.

    A record ends at a line feed, or a carriage return not followed by one, outside quotes.
    Quote state follows the parity of quote bytes, which doubled quotes ("") do not change.
    Record numbers past the end of the data are left out.
    """
    del header  # the header is record 1 when present, which the numbering already includes
    numbers, lines, _ = map_record_lines(chunks, np.fromiter(records, dtype=np.int64), quote=quote)
    return dict(zip(numbers.tolist(), lines.tolist(), strict=True))


def map_record_lines(
    chunks: Iterable[bytes], records: np.ndarray[Any, Any], *, quote: str | None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], int]:
    """Return the sorted distinct record numbers found, the start line of each, and the total
    number of records the scan found.

    Memory grows with the number of records asked for, not with the size of the data. A quote
    inside an unquoted field (``5" pipe``) is a literal character to a CSV reader but flips the
    quote parity here; compare the total with the reader's count and, when they differ, use
    ``map_record_lines_exactly``.
    """
    wanted = np.unique(records)
    scanner = _RecordScanner(ord(quote) if quote else -1, wanted)
    for chunk in chunks:
        scanner.feed(np.frombuffer(chunk, dtype=np.uint8))
    scanner.finish()
    numbers, lines = scanner.result()
    return numbers, lines, scanner.records_seen


def map_record_lines_exactly(
    file: IO[str], records: np.ndarray[Any, Any], *, delimiter: str, quote: str | None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Map record numbers to start lines with Python's csv module: exact but slow (tens of
    MB/s), for files where the fast scan and the reader disagree.
    """
    wanted = set(np.unique(records).tolist())
    reader = csv.reader(
        file,
        delimiter=delimiter,
        quotechar=quote or '"',
        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
    )
    numbers: list[int] = []
    lines: list[int] = []
    record = 0
    start_line = 1
    for row in reader:
        if row:  # a blank line is no record, for pyarrow as for csv
            record += 1
            if record in wanted:
                numbers.append(record)
                lines.append(start_line)
        start_line = reader.line_num + 1
    return np.array(numbers, dtype=np.int64), np.array(lines, dtype=np.int64)


class _RecordScanner:
    """Collect, chunk by chunk, the start line of every non-blank record."""

    def __init__(self, quote_byte: int, wanted: np.ndarray[Any, Any]) -> None:
        self.quote_byte = quote_byte
        self.wanted = wanted
        self.records_seen = 0
        self.found_records: list[np.ndarray[Any, Any]] = []
        self.found_lines: list[np.ndarray[Any, Any]] = []
        self.inside_quotes = False
        self.lines_before = 0  # line breaks seen before the current chunk
        self.record_has_content = False
        self.current_start_line = 1
        # A carriage return that ends a chunk waits for the next byte: CRLF is one break.
        self.held = np.empty(0, np.uint8)

    def feed(self, data: np.ndarray[Any, Any], *, last: bool = False) -> None:
        if self.held.size:
            data = np.concatenate((self.held, data))
            self.held = np.empty(0, np.uint8)
        if not last and data.size and data[-1] == CARRIAGE_RETURN:
            self.held, data = data[-1:], data[:-1]
        if data.size == 0:
            return
        breaks = self._line_breaks(data)
        quotes = (
            np.flatnonzero(data == self.quote_byte)
            if self.quote_byte >= 0
            else np.empty(0, np.int64)
        )
        # Quote parity at each break: odd means the break lies inside a quoted field.
        parity = (np.searchsorted(quotes, breaks) + int(self.inside_quotes)) % 2
        outside = breaks[parity == 0]
        # Content bytes: anything but line break bytes; a record is blank without any.
        content = np.flatnonzero((data != NEWLINE) & (data != CARRIAGE_RETURN))
        previous = np.concatenate(([-1], outside[:-1])) if outside.size else outside
        low = np.searchsorted(content, previous + 1)
        high = np.searchsorted(content, outside)
        has_content = high > low
        start_lines = np.zeros(outside.size, dtype=np.int64)
        found = has_content.nonzero()[0]
        # The line of a byte is one more than the number of breaks before it.
        start_lines[found] = np.searchsorted(breaks, content[low[found]]) + self.lines_before + 1
        if outside.size and self.record_has_content:
            # The first record began in an earlier chunk.
            has_content[0] = True
            start_lines[0] = self.current_start_line
        if outside.size:
            self._keep(start_lines[has_content])
            self.record_has_content = False
        tail = np.searchsorted(content, outside[-1] + 1) if outside.size else 0
        if not self.record_has_content and tail < content.size:
            self.record_has_content = True
            self.current_start_line = (
                int(np.searchsorted(breaks, content[tail])) + self.lines_before + 1
            )
        self.inside_quotes = bool((quotes.size + int(self.inside_quotes)) % 2)
        self.lines_before += breaks.size

    def finish(self) -> None:
        self.feed(np.empty(0, np.uint8), last=True)
        if self.record_has_content:
            self._keep(np.array([self.current_start_line], dtype=np.int64))
            self.record_has_content = False

    def result(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        if not self.found_records:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(self.found_records), np.concatenate(self.found_lines)

    def _keep(self, start_lines: np.ndarray[Any, Any]) -> None:
        """Keep the start lines of the wanted records among the next ``len(start_lines)``."""
        first = self.records_seen + 1
        self.records_seen += start_lines.size
        low = np.searchsorted(self.wanted, first)
        high = np.searchsorted(self.wanted, self.records_seen, side="right")
        if high > low:
            numbers = self.wanted[low:high]
            self.found_records.append(numbers)
            self.found_lines.append(start_lines[numbers - first])

    def _line_breaks(self, data: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Positions of line feeds, and of carriage returns not followed by a line feed."""
        feeds = data == NEWLINE
        returns = data == CARRIAGE_RETURN
        lone = returns.copy()
        lone[:-1] &= ~feeds[1:]
        return np.flatnonzero(feeds | lone)
