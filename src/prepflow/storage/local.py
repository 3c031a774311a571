"""The local object store: one folder per bucket under ``<home>/buckets``.

An object is the file at ``<home>/buckets/<bucket>/<key>``, so any program can drop files in.
Metadata that a file system does not keep (ETag, sequencer) lives in ``<home>/store.db``,
keyed by the file's identity (size, mtime, inode). A file that changes is a new upload, so it
gets a new, larger sequencer, as a new PUT does on S3.

Writes go to ``<home>/tmp`` first and are renamed into place, so no reader sees half an object.
After each ``put_object`` the store sends subscribers the S3 ObjectCreated notification, the
same JSON that S3 sends.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any, BinaryIO

from prepflow.errors import InvalidKeyError, ObjectNotFoundError, StorageError
from prepflow.events import build_s3_notification
from prepflow.local.sqlite import closing_connection, ensure_schema, write_transaction
from prepflow.storage.base import ObjectInfo, ObjectStore, check_bucket_name, check_key

logger = logging.getLogger(__name__)

# Most Linux file systems hold names of at most 255 bytes; a longer key segment cannot be
# stored here, although S3 would take it.
MAX_SEGMENT_BYTES = 255
COPY_CHUNK_BYTES = 1 << 20

Subscriber = Callable[[dict[str, Any]], None]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS objects (
        bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, etag TEXT NOT NULL,
        sequencer TEXT NOT NULL, PRIMARY KEY (bucket, key))""",
    """CREATE TABLE IF NOT EXISTS sequencers (
        bucket TEXT PRIMARY KEY, last_value INTEGER NOT NULL)""",
)


class LocalObjectStore(ObjectStore):
    """Buckets as folders; see the module docstring for the guarantees."""

    def __init__(self, home: Path, *, region: str = "us-east-1") -> None:
        self.home = home
        self.region = region
        self.buckets_root = home / "buckets"
        self._tmp = home / "tmp"
        self._db = home / "store.db"
        self._subscribers: list[tuple[str, Subscriber]] = []
        self.buckets_root.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        ensure_schema(self._db, _SCHEMA)

    def subscribe(self, bucket: str, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with the S3 notification of every object put in ``bucket``.

        Like an S3 event notification configuration, a subscription is per bucket.
        """
        self._subscribers.append((bucket, subscriber))

    # -- writes ---------------------------------------------------------------------------

    def put_object(self, bucket: str, key: str, body: bytes) -> ObjectInfo:
        return self._write(bucket, key, lambda out: out.write(body))

    def upload_file(self, bucket: str, key: str, path: Path) -> ObjectInfo:
        try:
            with path.open("rb") as source:
                return self.upload_fileobj(bucket, key, source)
        except FileNotFoundError as error:
            raise StorageError(f"cannot upload {str(path)!r}: file not found") from error
        except OSError as error:
            raise StorageError(f"cannot upload {str(path)!r}: {error.strerror}") from error

    def upload_fileobj(self, bucket: str, key: str, source: BinaryIO) -> ObjectInfo:
        """Store what ``source`` reads, from its current position to its end."""
        return self._write(bucket, key, lambda out: shutil.copyfileobj(source, out))

    def open_log(self, bucket: str, key: str) -> BinaryIO:
        """Open a log object for appending; log objects grow while their job runs."""
        path = self._path_for(bucket, key, create=True)
        return path.open("ab")

    def _write(self, bucket: str, key: str, fill: Callable[[_HashingWriter], object]) -> ObjectInfo:
        target = self._path_for(bucket, key, create=True)
        if key.endswith("/"):
            return self._put_folder_placeholder(bucket, key, target)
        temporary, etag = self._fill_temporary(fill)
        try:
            info = self._commit(bucket, key, temporary, target, etag)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        logger.debug("put s3://%s/%s (%d bytes)", bucket, key, info.size)
        self._notify(info)
        return info

    def _fill_temporary(self, fill: Callable[[_HashingWriter], object]) -> tuple[Path, str]:
        descriptor, name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        temporary = Path(name)
        try:
            # mkstemp creates the file private (0600); an object gets the mode any new file
            # of this user would get.
            os.fchmod(descriptor, 0o666 & ~_umask())
            with os.fdopen(descriptor, "wb") as handle:
                writer = _HashingWriter(handle)
                fill(writer)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary, writer.hexdigest()

    def _commit(
        self, bucket: str, key: str, temporary: Path, target: Path, etag: str
    ) -> ObjectInfo:
        # The rename happens under the database write lock, so a concurrent scan finds either
        # no file or a file already recorded, and never records it a second time.
        with closing_connection(self._db) as connection, write_transaction(connection):
            try:
                os.replace(temporary, target)
            except IsADirectoryError as error:
                raise StorageError(
                    f"cannot store s3://{bucket}/{key}: a folder of that name exists here, "
                    f"because other keys start with '{key}/' (S3 allows both; this store cannot)"
                ) from error
            stat = target.stat()
            sequencer = self._next_sequencer(connection, bucket)
            self._record(connection, bucket, key, stat, etag, sequencer)
        return _info(bucket, key, stat, etag, sequencer)

    def _put_folder_placeholder(self, bucket: str, key: str, target: Path) -> ObjectInfo:
        # A folder stands for the zero-byte object S3 keeps under a key ending in '/'.
        target.mkdir(parents=True, exist_ok=True)
        with closing_connection(self._db) as connection, write_transaction(connection):
            sequencer = self._next_sequencer(connection, bucket)
        info = ObjectInfo(
            bucket=bucket,
            key=key,
            size=0,
            etag=hashlib.md5(b"").hexdigest(),
            last_modified=datetime.now(UTC),
            sequencer=sequencer,
        )
        self._notify(info)
        return info

    def _notify(self, info: ObjectInfo) -> None:
        subscribers = [s for bucket, s in self._subscribers if bucket == info.bucket]
        if not subscribers:
            return
        notification = build_s3_notification(
            bucket=info.bucket,
            key=info.key,
            size=info.size,
            etag=info.etag,
            sequencer=info.sequencer or "",
            region=self.region,
            event_time=info.last_modified,
        )
        for subscriber in subscribers:
            subscriber(notification)

    # -- reads ----------------------------------------------------------------------------

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        path = self._path_for(bucket, key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError) as error:
            raise ObjectNotFoundError(bucket, key) from error
        if not path.is_file():
            raise ObjectNotFoundError(bucket, key)
        return self._sync_metadata(bucket, key, path, stat)

    def get_object(self, bucket: str, key: str) -> bytes:
        path = self._path_for(bucket, key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
            raise ObjectNotFoundError(bucket, key) from error

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        source = self._path_for(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
            if source.is_file():
                raise StorageError(f"cannot write {str(path)!r}: {error}") from error
            raise ObjectNotFoundError(bucket, key) from error

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        for key, path, stat in self.scan(bucket, prefix):
            yield self._sync_metadata(bucket, key, path, stat)

    def scan(
        self, bucket: str, prefix: str = "", *, on_skip: Callable[[str, str], None] | None = None
    ) -> Iterator[tuple[str, Path, os.stat_result]]:
        """Yield (key, path, stat) of every regular file under ``prefix``, in key order.

        Reads no content and records nothing, so a watcher can wait for a file to settle.
        Entries that are not objects (links, FIFOs, names that are not UTF-8) are passed to
        ``on_skip`` with the reason.
        """
        skip = on_skip or (lambda key, reason: None)
        root = self._bucket_root(bucket)
        if prefix:
            check_key(prefix)
        start = root / prefix.rsplit("/", 1)[0] if "/" in prefix else root
        if not start.is_dir():
            return
        _check_contained(root, start / "_", bucket, prefix)
        found = []
        for path in _walk_files(start):
            key = path.relative_to(root).as_posix()
            try:
                encoded = key.encode("utf-8")
            except UnicodeEncodeError:
                skip(repr(key), "its name is not UTF-8")
                continue
            if path.is_symlink():
                skip(key, "it is a symbolic link, which the store never follows")
                continue
            if key.startswith(prefix):
                found.append((encoded, key, path))
        # S3 lists keys in UTF-8 byte order; Path order would differ ("a/b" before "a-c").
        for _, key, path in sorted(found):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed since the walk
            if S_ISREG(stat.st_mode):
                yield key, path, stat
            else:
                skip(key, "it is not a regular file")

    # -- metadata -------------------------------------------------------------------------

    def _sync_metadata(self, bucket: str, key: str, path: Path, stat: os.stat_result) -> ObjectInfo:
        with closing_connection(self._db) as connection:
            row = connection.execute(
                "SELECT * FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
            ).fetchone()
            if row is not None and _same_file(row, stat):
                return _info(bucket, key, stat, row["etag"], row["sequencer"])
            try:
                etag = _md5_of(path)
            except OSError as error:
                raise StorageError(
                    f"cannot read s3://{bucket}/{key} ({path}): {error.strerror}"
                ) from error
            with write_transaction(connection):
                # Another process may have recorded this same file since the read above.
                row = connection.execute(
                    "SELECT * FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
                ).fetchone()
                current = path.stat()
                if row is not None and _same_file(row, current):
                    return _info(bucket, key, current, row["etag"], row["sequencer"])
                if row is not None and row["etag"] == etag and row["size"] == current.st_size:
                    # Same content, new timestamp (a touch or a copy of the same bytes): S3
                    # would have seen no new upload, so the object keeps its sequencer.
                    self._record(connection, bucket, key, current, etag, row["sequencer"])
                    return _info(bucket, key, current, etag, row["sequencer"])
                sequencer = self._next_sequencer(connection, bucket)
                self._record(connection, bucket, key, current, etag, sequencer)
            logger.info("recorded new object s3://%s/%s (sequencer %s)", bucket, key, sequencer)
            return _info(bucket, key, current, etag, sequencer)

    @staticmethod
    def _next_sequencer(connection: sqlite3.Connection, bucket: str) -> str:
        connection.execute(
            "INSERT INTO sequencers (bucket, last_value) VALUES (?, 1) "
            "ON CONFLICT (bucket) DO UPDATE SET last_value = last_value + 1",
            (bucket,),
        )
        (value,) = connection.execute(
            "SELECT last_value FROM sequencers WHERE bucket = ?", (bucket,)
        ).fetchone()
        # Fixed-width hex, so string order is numeric order, as with S3's sequencers.
        return f"{value:016X}"

    @staticmethod
    def _record(
        connection: sqlite3.Connection,
        bucket: str,
        key: str,
        stat: os.stat_result,
        etag: str,
        sequencer: str,
    ) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO objects "
            "(bucket, key, size, mtime_ns, inode, etag, sequencer) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (bucket, key, stat.st_size, stat.st_mtime_ns, stat.st_ino, etag, sequencer),
        )

    # -- paths ----------------------------------------------------------------------------

    def _bucket_root(self, bucket: str) -> Path:
        check_bucket_name(bucket)
        return self.buckets_root / bucket

    def _path_for(self, bucket: str, key: str, *, create: bool = False) -> Path:
        check_key(key)
        for segment in key.split("/"):
            if len(segment.encode()) > MAX_SEGMENT_BYTES:
                raise InvalidKeyError(
                    f"object key {key[:60]!r}... has a path segment longer than "
                    f"{MAX_SEGMENT_BYTES} bytes, which the local store cannot hold"
                )
        root = self._bucket_root(bucket)
        path = root / key
        _check_no_linked_folders(root, key, bucket)
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as error:
                raise StorageError(
                    f"cannot store s3://{bucket}/{key}: a part of its path is an object "
                    "already (S3 allows keys 'a' and 'a/b' together; this store cannot)"
                ) from error
        _check_contained(root, path, bucket, key)
        return path


class _HashingWriter:
    """A file wrapper that computes the MD5 of what passes through (the single-part ETag)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._md5 = hashlib.md5()

    def write(self, data: bytes) -> int:
        self._md5.update(data)
        return self._handle.write(data)

    def hexdigest(self) -> str:
        return self._md5.hexdigest()


def _check_no_linked_folders(root: Path, key: str, bucket: str) -> None:
    # Checked before any folder is created, so a planted link never gets folders made
    # outside the bucket.
    current = root
    for segment in key.split("/")[:-1]:
        current = current / segment
        if current.is_symlink():
            raise InvalidKeyError(
                f"object key {key!r} passes through a symbolic link in bucket {bucket!r}; "
                "links are never followed"
            )
        if not current.exists():
            return


def _check_contained(root: Path, path: Path, bucket: str, key: str) -> None:
    # A symbolic link planted inside a bucket folder must not lead reads or writes outside it.
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(path.parent)
    if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
        raise InvalidKeyError(f"object key {key!r} resolves outside bucket {bucket!r}")
    if path.is_symlink():
        raise InvalidKeyError(f"object s3://{bucket}/{key} is a symbolic link; it is not read")


def _walk_files(start: Path) -> Iterator[Path]:
    """Yield every entry that is not a real folder; links to folders are yielded, not entered."""
    for directory, folders, files in os.walk(start, followlinks=False):
        folders.sort()
        for name in folders:
            if Path(directory, name).is_symlink():
                yield Path(directory, name)
        for name in files:
            yield Path(directory, name)


def _umask() -> int:
    # Read, not set and reset with os.umask, which would race with other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _same_file(row: sqlite3.Row, stat: os.stat_result) -> bool:
    return bool(
        row["size"] == stat.st_size
        and row["mtime_ns"] == stat.st_mtime_ns
        and row["inode"] == stat.st_ino
    )


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _info(bucket: str, key: str, stat: os.stat_result, etag: str, sequencer: str) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=stat.st_size,
        etag=etag,
        last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        sequencer=sequencer,
    )
