"""Terminal output of the command line: colour, aligned tables and one-line progress.

Colour and progress are for people at a terminal. Output to a pipe or a file stays plain text
with no escape sequences, so scripts can parse it. ``NO_COLOR`` (https://no-color.org) turns
colour off, and ``TERM=dumb`` turns off both colour and the redrawn progress line.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO, TextIO

# Seconds between redraws of a progress line: fast enough for a clock in tenths of seconds.
REDRAW_SECONDS = 0.2

_RESET = "\x1b[0m"
_COLOURS = {"green": "\x1b[32m", "red": "\x1b[31m", "yellow": "\x1b[33m", "bold": "\x1b[1m"}
# SageMaker's processing-job statuses, coloured by what they mean to the reader.
STATUS_COLOURS = {
    "Completed": "green",
    "Failed": "red",
    "Stopped": "red",
    "Stopping": "yellow",
    "InProgress": "yellow",
}


def is_terminal(stream: TextIO) -> bool:
    """Tell whether ``stream`` is an interactive terminal that can redraw a line."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return False
    return os.environ.get("TERM") != "dumb"


def colour_enabled(stream: TextIO) -> bool:
    """Tell whether text for ``stream`` may carry colour escape sequences."""
    return is_terminal(stream) and not os.environ.get("NO_COLOR")


def paint(text: str, colour: str | None, *, enabled: bool) -> str:
    """Wrap ``text`` in the escape sequences of ``colour`` when colour is enabled."""
    if not enabled or colour is None:
        return text
    return f"{_COLOURS[colour]}{text}{_RESET}"


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right_aligned: frozenset[int] = frozenset(),
    colours: Callable[[int, str], str | None] | None = None,
    colour: bool = False,
) -> list[str]:
    """Return the lines of a table with columns two spaces apart; the last column is not padded.

    ``right_aligned`` contains the indexes of numeric columns. ``colours(column, cell)`` picks a
    cell's colour, applied after padding so that escape sequences do not upset the widths.
    """
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for number, row in enumerate([header, *rows]):
        cells = []
        for index, cell in enumerate(row):
            last = index == len(row) - 1
            if index in right_aligned:
                padded = cell.rjust(widths[index])
            else:
                padded = cell if last else cell.ljust(widths[index])
            chosen = "bold" if number == 0 else (colours(index, cell) if colours else None)
            cells.append(paint(padded, chosen, enabled=colour))
        lines.append("  ".join(cells))
    return lines


def format_bytes(size: float) -> str:
    """Return a size in bytes as people read it: 512 B, 3.4 MiB, 1.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_elapsed(seconds: float) -> str:
    """Return a duration as ``12.3 s`` under a minute, else ``4m05s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


class StatusLine:
    """One line on a terminal, redrawn in place with a carriage return.

    Disabled, it writes nothing, so callers need no branch for pipes and ``--json``. It pads
    with spaces over a longer previous text instead of sending an erase sequence.
    """

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._width = 0
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
            self._width = len(text)

    def clear(self) -> None:
        """Blank the line and return the cursor to its start, ready for ordinary output."""
        if not self.enabled or self._width == 0:
            return
        with self._lock:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


class UploadProgress:
    """A binary file wrapper that reports bytes read as ``name: 12.0 MiB of 40.0 MiB (30%)``.

    Only ``read`` is wrapped: it is all that the local store's copy calls. Files smaller than
    ``min_bytes`` show no progress, because they are uploaded before a person could read it.
    """

    def __init__(
        self,
        source: BinaryIO | None,
        *,
        name: str,
        total: int,
        line: StatusLine,
        min_bytes: int,
    ) -> None:
        self.source = source
        self.name = name
        self.total = total
        self.line = line
        self.active = line.enabled and total >= min_bytes
        self.done = 0
        self._shown_at = 0.0
        self._lock = threading.Lock()

    def read(self, size: int = -1) -> bytes:
        if self.source is None:
            raise ValueError(f"no file to read: {self.name}'s progress is fed by advance()")
        chunk = self.source.read(size)
        self.advance(len(chunk))
        return chunk

    def advance(self, count: int) -> None:
        """Count ``count`` more bytes sent; callable from several upload threads."""
        with self._lock:
            self.done += count
            now = time.monotonic()
            finished = count == 0 or self.done >= self.total
            if not self.active or (now - self._shown_at < REDRAW_SECONDS and not finished):
                return
            self._shown_at = now
            percent = 100 * self.done // self.total if self.total else 100
            self.line.show(
                f"uploading {self.name}: {format_bytes(self.done)} of "
                f"{format_bytes(self.total)} ({percent}%)"
            )


class WaitStatus:
    """A status line with the elapsed time, redrawn by a background thread while jobs run.

    ``update(pending)`` comes from the caller's poll loop with the jobs still running. The
    thread only redraws, so the clock moves even when polls are seconds apart (5 s on AWS).
    """

    def __init__(self, line: StatusLine, job_names: Sequence[str]) -> None:
        self.line = line
        self._started = time.monotonic()
        self._pending = list(job_names)
        self._total = len(job_names)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WaitStatus:
        if self.line.enabled:
            self._thread = threading.Thread(target=self._redraw, name="wait-status", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.line.clear()

    def update(self, pending: list[str]) -> None:
        self._pending = list(pending)

    def _redraw(self) -> None:
        while not self._stop.wait(REDRAW_SECONDS):
            self.line.show(self.text())

    def text(self) -> str:
        elapsed = format_elapsed(time.monotonic() - self._started)
        pending = self._pending
        ended = self._total - len(pending)
        if len(pending) == 1 and self._total == 1:
            return f"waiting for {pending[0]} ... {elapsed}"
        return f"waiting for {len(pending)} of {self._total} jobs ({ended} ended) ... {elapsed}"


def stderr_line(*, quiet: bool) -> StatusLine:
    """Return a status line on stderr, enabled when stderr is a terminal and not ``quiet``."""
    return StatusLine(sys.stderr, enabled=not quiet and is_terminal(sys.stderr))
