"""Line numbers for messages: the line a CSV record starts on, and the first undecodable line.

The CSV reader counts records, not lines: a quoted field can hold line breaks, and blank lines
are skipped. ``record_start_lines`` scans the raw bytes once, with numpy, to map record numbers
back to the physical line where each record starts. It runs only when some rows are rejected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

import numpy as np

SCAN_CHUNK_BYTES = 16 << 20
NEWLINE = 0x0A
CARRIAGE_RETURN = 0x0D


def find_undecodable_line(file: IO[bytes], encoding: str) -> str | None:
    """Describe the first line that ``encoding`` cannot decode, or return None."""
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
                f"{offset + error.start} of the file cannot be decoded; save the file as "
                f"{encoding} or declare its encoding in the recipe (input.encoding)"
            )
        offset += len(line)
    return None


def is_line_mappable(encoding: str | None) -> bool:
    """Tell whether line feeds and quotes are single ASCII bytes in ``encoding``."""
    if encoding is None:
        return False
    try:
        return '\n,"\r'.encode(encoding) == b'\n,"\r'
    except (LookupError, UnicodeEncodeError):
        return False


def record_start_lines(
    chunks: Iterable[bytes], records: Iterable[int], *, quote: str | None, header: bool
) -> dict[int, int]:
    """Map record numbers (as pyarrow counts them: non-blank records, header first) to lines.

    A record ends at a line feed, or a carriage return not followed by one, outside quotes.
    Quote state follows the parity of quote bytes, which doubled quotes ("") do not change.
    """
    wanted = np.unique(np.fromiter(records, dtype=np.int64))
    del header  # the header is record 1 when present, which the numbering already includes
    if wanted.size == 0:
        return {}
    quote_byte = ord(quote) if quote else -1
    scanner = _RecordScanner(quote_byte)
    for chunk in chunks:
        scanner.feed(np.frombuffer(chunk, dtype=np.uint8))
    scanner.finish()
    starts = scanner.record_lines()
    found: dict[int, int] = {}
    for record in wanted.tolist():
        if 1 <= record <= starts.size:
            found[record] = int(starts[record - 1])
    return found


class _RecordScanner:
    """Collect, chunk by chunk, the start line of every non-blank record."""

    def __init__(self, quote_byte: int) -> None:
        self.quote_byte = quote_byte
        self.inside_quotes = False
        self.lines_before = 0  # line breaks seen before the current chunk
        self.record_has_content = False
        self.current_start_line = 1
        # A carriage return that ends a chunk waits for the next byte: CRLF is one break.
        self.held = np.empty(0, np.uint8)
        self.starts: list[np.ndarray[Any, Any]] = []

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
            self.starts.append(start_lines[has_content])
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
            self.starts.append(np.array([self.current_start_line], dtype=np.int64))
            self.record_has_content = False

    def record_lines(self) -> np.ndarray[Any, Any]:
        return np.concatenate(self.starts) if self.starts else np.empty(0, np.int64)

    def _line_breaks(self, data: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Positions of line feeds, and of carriage returns not followed by a line feed."""
        feeds = data == NEWLINE
        returns = data == CARRIAGE_RETURN
        lone = returns.copy()
        lone[:-1] &= ~feeds[1:]
        return np.flatnonzero(feeds | lone)
