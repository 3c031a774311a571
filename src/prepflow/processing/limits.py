"""Bounds on what one input file may cost to read, so a hostile file fails fast and cheaply.

A gzip bomb (a small file that expands to gigabytes) and a record of hundreds of megabytes
would otherwise hold the job's memory or time. The step reads both limits from its
environment; the orchestrator passes the deployment's values in the job's ``Environment``.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from prepflow.errors import ProcessingError

MAX_RECORD_BYTES_VARIABLE = "PREPFLOW_MAX_RECORD_BYTES"
MAX_DECOMPRESSION_RATIO_VARIABLE = "PREPFLOW_MAX_DECOMPRESSION_RATIO"
DEFAULT_MAX_RECORD_BYTES = 4 << 20
# Text data such as CSV usually compresses 3 to 20 times; deflate cannot exceed about 1,032.
DEFAULT_MAX_DECOMPRESSION_RATIO = 200
# Decompressed bytes allowed whatever the ratio, so a small file of repeated values passes.
MIN_DECOMPRESSED_BYTES = 64 << 20
# Bytes of an oversized record kept for the rejected rows.
RECORD_PREVIEW_BYTES = 200
_DECOMPRESS_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ReadLimits:
    """The largest record, and the largest decompressed size per compressed byte."""

    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_decompression_ratio: int = DEFAULT_MAX_DECOMPRESSION_RATIO

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> ReadLimits:
        """Read the limits from their variables; raise ProcessingError for a bad value."""
        return cls(
            max_record_bytes=_positive(
                environment, MAX_RECORD_BYTES_VARIABLE, DEFAULT_MAX_RECORD_BYTES
            ),
            max_decompression_ratio=_positive(
                environment, MAX_DECOMPRESSION_RATIO_VARIABLE, DEFAULT_MAX_DECOMPRESSION_RATIO
            ),
        )

    def record_too_long(self, name: str, line: int | None) -> str:
        """Return the reason given for a record longer than ``max_record_bytes``."""
        where = f" (line {line})" if line is not None else ""
        return (
            f"a record of {name!r}{where} is longer than the maximum record size of "
            f"{self.max_record_bytes:,} bytes; raise {MAX_RECORD_BYTES_VARIABLE} if such "
            "records are expected"
        )


def _positive(environment: Mapping[str, str], variable: str, default: int) -> int:
    text = environment.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ProcessingError(f"{variable}={text!r} is invalid: expected a whole number above 0")
    return value


def open_gzip(path: Path, name: str, limits: ReadLimits) -> IO[bytes]:
    """Open a gzip file for reading; reading fails once it expands beyond the ratio limit."""
    return io.BufferedReader(_BoundedGzip(path, name, limits), _DECOMPRESS_CHUNK_BYTES)


class _BoundedGzip(io.RawIOBase):
    """Decompresses a gzip file and counts the output against the compressed input read."""

    def __init__(self, path: Path, name: str, limits: ReadLimits) -> None:
        super().__init__()
        self._compressed = path.open("rb")
        self._gzip = gzip.GzipFile(fileobj=self._compressed, mode="rb")
        self._name = name
        self._ratio = limits.max_decompression_ratio
        self._produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = self._gzip.readinto(buffer)
        self._produced += count
        # The compressed position runs ahead by at most one read buffer, which only helps
        # small files.
        allowed = max(MIN_DECOMPRESSED_BYTES, self._ratio * self._compressed.tell())
        if self._produced > allowed:
            raise ProcessingError(
                f"cannot decompress {self._name!r}: it expands more than "
                f"{self._ratio} times its compressed size ({self._produced:,} bytes from "
                f"{self._compressed.tell():,} compressed bytes), which looks like a "
                f"decompression bomb; raise {MAX_DECOMPRESSION_RATIO_VARIABLE} if the file is "
                "genuine"
            )
        return count

    def close(self) -> None:
        try:
            self._gzip.close()
            self._compressed.close()
        finally:
            super().close()


def bounded_lines(file: IO[bytes], max_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """Yield each line of ``file`` with False, or its first bytes with True when it is longer.

    A line longer than ``max_bytes`` (line break excluded) is never held whole: the rest of
    it is read and dropped in pieces of ``max_bytes``.
    """
    while line := file.readline(max_bytes + 1):
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line, False
            continue
        preview = line[:RECORD_PREVIEW_BYTES]
        while (rest := file.readline(max_bytes + 1)) and not rest.endswith(b"\n"):
            pass
        yield preview, True
