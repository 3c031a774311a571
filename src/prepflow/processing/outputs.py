"""Output file names of the per-file mode: ``processed_<input name>``, as the reference script.

A name longer than a Linux file system allows (NAME_MAX, 255 bytes) is shortened with a hash,
so that two long input names still get different outputs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

OUTPUT_PREFIX = "processed_"
# NAME_MAX on Linux file systems (ext4, xfs, tmpfs, overlayfs): bytes in one path component.
MAX_NAME_BYTES = 255
# Hex digits of the SHA-256 of the input name that keep shortened output names apart.
NAME_HASH_DIGITS = 8


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


# Suffixes that per_file_stem removes: compression first, then the data format.
COMPRESSION_SUFFIXES = (".gz", ".gzip")
FORMAT_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson", ".json")


def per_file_stem(relative_name: str) -> str:
    """Return ``<subfolder>/processed_<name>`` of an input, without the extension that the
    output format adds: ``2024/a.csv.gz`` gives ``2024/processed_a``.
    """
    relative = Path(relative_name)
    name = relative.name
    for suffix in COMPRESSION_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    stem = output_name(Path(name))
    suffix = Path(stem).suffix
    if suffix.lower() in FORMAT_SUFFIXES:
        stem = stem[: -len(suffix)]
    return str(relative.parent / stem) if relative.parent != Path(".") else stem
