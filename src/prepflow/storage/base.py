"""The object store port: S3's data model, implemented by a local folder store and by S3 itself.

Keys follow S3's rules: any UTF-8 string of 1 to 1,024 bytes, where ``/`` is only a character.
Manifests use the SageMaker ``ManifestFile`` format: a JSON array whose first item is
``{"prefix": "s3://bucket/prefix/"}`` and whose other items are keys relative to that prefix.
"""

from __future__ import annotations

import json
import posixpath
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prepflow.errors import InvalidKeyError, StorageError

MAX_KEY_BYTES = 1024
# S3 bucket naming rules (the S3 user guide, "General purpose bucket naming rules"), without
# the rarely used dotted forms that S3 also restricts.
BUCKET_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Metadata of one object, as HeadObject returns it."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime
    sequencer: str | None = None
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return s3_uri(self.bucket, self.key)


class ObjectStore(ABC):
    """Buckets of objects; every write is whole (a reader never sees half an object)."""

    @abstractmethod
    def put_object(self, bucket: str, key: str, body: bytes) -> ObjectInfo: ...

    @abstractmethod
    def upload_file(self, bucket: str, key: str, path: Path) -> ObjectInfo: ...

    @abstractmethod
    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        """Return the object's metadata; raise ObjectNotFoundError when there is none."""

    @abstractmethod
    def get_object(self, bucket: str, key: str) -> bytes: ...

    @abstractmethod
    def download_file(self, bucket: str, key: str, path: Path) -> None: ...

    @abstractmethod
    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, in key order."""

    def put_manifest(self, bucket: str, key: str, prefix_uri: str, keys: list[str]) -> ObjectInfo:
        """Write a SageMaker manifest listing ``keys``, each relative to ``prefix_uri``."""
        body = json.dumps([{"prefix": prefix_uri}, *keys], ensure_ascii=False, indent=1)
        return self.put_object(bucket, key, body.encode())

    def read_manifest(self, bucket: str, key: str) -> tuple[str, list[str]]:
        """Return a manifest object's prefix URI and its keys relative to that prefix."""
        return parse_manifest(self.get_object(bucket, key), source=s3_uri(bucket, key))


def parse_manifest(body: bytes, *, source: str) -> tuple[str, list[str]]:
    """Return the prefix URI and relative keys of a ManifestFile body; raise if malformed."""
    try:
        entries = json.loads(body)
        prefix = entries[0]["prefix"]
        relative = entries[1:]
        parse_s3_uri(prefix)
    except (ValueError, KeyError, IndexError, TypeError, StorageError) as error:
        raise StorageError(
            f"manifest {source} is not a SageMaker manifest: expected "
            '[{"prefix": "s3://bucket/prefix/"}, "key", ...]'
        ) from error
    if not all(isinstance(item, str) for item in relative):
        raise StorageError(f"manifest {source}: every entry after the prefix must be a key string")
    return prefix, relative


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key (the key may be empty or a prefix)."""
    if not uri.startswith("s3://"):
        raise StorageError(f"not an S3 URI: {uri!r}; expected s3://bucket/key")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"S3 URI {uri!r} has no bucket name")
    return bucket, key


def check_bucket_name(bucket: str) -> None:
    """Raise StorageError unless ``bucket`` follows S3's bucket naming rules."""
    if not BUCKET_NAME_PATTERN.match(bucket) or ".." in bucket:
        raise StorageError(
            f"invalid bucket name {bucket!r}: use 3 to 63 lowercase letters, digits, "
            "hyphens or dots, starting and ending with a letter or digit"
        )


def check_key(key: str) -> None:
    """Raise InvalidKeyError for a key that is not a valid S3 key or could escape a folder.

    S3 would accept ``a/../b`` or ``a//b``, but on a file system they alias other keys or
    climb out of the bucket, so every store rejects them for one behaviour in both modes.
    """
    if not key:
        raise InvalidKeyError("object key is empty; S3 keys have 1 to 1,024 bytes")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidKeyError(f"object key {key!r} is not valid UTF-8 text") from error
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key {key[:60]!r}... is longer than {MAX_KEY_BYTES} bytes")
    if "\0" in key:
        raise InvalidKeyError(f"object key {key!r} contains a NUL character")
    control = next((c for c in key if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        # S3 accepts them, but a line break or an escape sequence in a key would reach logs,
        # terminals and file names; the S3 user guide lists them among characters to avoid.
        raise InvalidKeyError(
            f"object key {key[:80]!r} contains the control character U+{ord(control):04X}; "
            "rename the object without control characters"
        )
    if key.startswith("/"):
        raise InvalidKeyError(f"object key {key!r} starts with '/'; keys are relative to a bucket")
    segments = key.split("/")
    inner = segments[:-1] if key.endswith("/") else segments
    for segment in inner:
        if segment in ("", ".", ".."):
            raise InvalidKeyError(
                f"object key {key!r} has an empty, '.' or '..' path segment; "
                "rename the object without it"
            )


def relative_key(key: str, prefix: str) -> str:
    """Return ``key`` below ``prefix`` (a folder prefix ending in '/' or empty)."""
    if prefix and not key.startswith(prefix):
        raise StorageError(f"key {key!r} is not under prefix {prefix!r}")
    return key[len(prefix) :]


def folder_prefix(key: str) -> str:
    """Return the folder part of ``key`` ('' for a key at the bucket's top level)."""
    folder = posixpath.dirname(key)
    return f"{folder}/" if folder else ""
