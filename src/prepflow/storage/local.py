"""The local object store: one folder per bucket under ``<home>/buckets``.

An object is the file at ``<home>/buckets/<bucket>/<key>``, so any program can drop files in.
Metadata that a file system does not keep (ETag, sequencer) lives in ``<home>/store.db``,
keyed by the file's identity (size, mtime, inode). A file that changes is a new upload, so it
gets a new, larger sequencer, as a new PUT does on S3.

Writes go to ``<home>/tmp`` first and are renamed into place, so no reader sees half an object.
After each ``put_object`` the store sends subscribers the S3 ObjectCreated notification, the
same JSON that S3 sends.

Anyone may write into a bucket folder, so a key is resolved one segment at a time with
``openat`` and ``O_NOFOLLOW``: a symbolic link planted anywhere below the bucket folder is
never followed, and swapping a folder for a link between a check and a use changes nothing,
because every step keeps the descriptor of the folder it resolved open.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import Any, BinaryIO

from prepflow.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    describe_write_error,
    is_no_space,
)
from prepflow.events import build_s3_notification
from prepflow.local.sqlite import (
    DEFAULT_LOCK_WAIT_SECONDS,
    Connection,
    closing_connection,
    ensure_schema,
    write_transaction,
)
from prepflow.storage.base import ObjectInfo, ObjectStore, check_bucket_name, check_key

logger = logging.getLogger(__name__)

# Most Linux file systems hold names of at most 255 bytes; a longer key segment cannot be
# stored here, although S3 would take it.
MAX_SEGMENT_BYTES = 255
COPY_CHUNK_BYTES = 1 << 20
NOT_UTF8 = "its name is not UTF-8"
# O_NONBLOCK keeps a FIFO planted under an object's name from blocking the open; it changes
# nothing for regular files.
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_APPEND_FLAGS = (
    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
)

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

    def __init__(
        self,
        home: Path,
        *,
        region: str = "us-east-1",
        lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
    ) -> None:
        self.home = home
        self.region = region
        self.lock_wait_seconds = lock_wait_seconds
        self.buckets_root = home / "buckets"
        self._tmp = home / "tmp"
        self._db = home / "store.db"
        self._subscribers: list[tuple[str, Subscriber]] = []
        self.buckets_root.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        ensure_schema(self._db, _SCHEMA, lock_wait_seconds=lock_wait_seconds)

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

    @contextmanager
    def publish(self, bucket: str, prefix: str) -> Iterator[Path]:
        """Yield an empty draft folder; on success its files appear under ``prefix`` at once.

        The draft lies in ``<home>/tmp``, on the file system of the buckets, and is renamed
        to the prefix's folder, so a reader sees no folder or the whole set, never a part.
        When that folder already contains objects (a manual request's chosen output), each file
        is renamed into it on its own instead: each appears whole, but not all at the same
        moment. On an error, or when the block raises, the draft is removed and nothing is
        published.
        """
        self._check_storable(prefix)
        if not prefix.endswith("/"):
            raise InvalidKeyError(f"cannot publish under {prefix!r}: a prefix ends with '/'")
        try:
            draft = Path(tempfile.mkdtemp(dir=self._tmp, prefix="publish-"))
        except OSError as error:
            raise StorageError(describe_write_error(error, f"s3://{bucket}/{prefix}")) from error
        try:
            yield draft
            self._move_into_place(bucket, prefix, draft)
        finally:
            shutil.rmtree(draft, ignore_errors=True)

    def _move_into_place(self, bucket: str, prefix: str, draft: Path) -> None:
        *folders, name = prefix.rstrip("/").split("/")
        root = self._bucket_root(bucket, create=True)
        parent = _open_folders(root, folders, bucket, prefix, True)
        try:
            # Under the database write lock, as every other write, so a scan that records
            # objects never races with the rename.
            with self._database() as connection, write_transaction(connection):
                try:
                    os.rename(draft, name, dst_dir_fd=parent)
                    return
                except OSError as error:
                    if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise StorageError(
                            f"cannot publish s3://{bucket}/{prefix}: {error.strerror}"
                        ) from error
        finally:
            os.close(parent)
        # NOTE: here a reader may see some of the files before the others.
        for path in sorted(p for p in draft.rglob("*") if p.is_file()):
            relative = path.relative_to(draft).as_posix()
            with self._parent_folder(bucket, prefix + relative, create=True) as (folder, leaf):
                _check_not_link(folder, leaf, bucket, prefix + relative)
                with self._database() as connection, write_transaction(connection):
                    os.replace(path, leaf, dst_dir_fd=folder)

    def open_log(self, bucket: str, key: str) -> BinaryIO:
        """Open a log object for appending; log objects grow while their job runs."""
        with self._parent_folder(bucket, key, create=True) as (parent, name):
            try:
                descriptor = os.open(name, _APPEND_FLAGS, 0o666, dir_fd=parent)
            except OSError as error:
                raise _unusable_entry(bucket, key, error) from error
        handle = os.fdopen(descriptor, "ab")
        if not S_ISREG(os.fstat(descriptor).st_mode):
            handle.close()
            raise StorageError(f"cannot append to s3://{bucket}/{key}: it is not a regular file")
        return handle

    def _write(self, bucket: str, key: str, fill: Callable[[_HashingWriter], object]) -> ObjectInfo:
        if key.endswith("/"):
            return self._put_folder_placeholder(bucket, key)
        # The folders are made and held before the data is copied, so a key that cannot be
        # stored fails before any work.
        with self._parent_folder(bucket, key, create=True) as (parent, name):
            _check_not_link(parent, name, bucket, key)
            try:
                temporary, etag, stat = self._fill_temporary(fill)
            except OSError as error:
                if not is_no_space(error):
                    raise
                raise StorageError(describe_write_error(error, f"s3://{bucket}/{key}")) from error
            try:
                info = self._commit(bucket, key, temporary, (parent, name), etag, stat)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        logger.debug("put s3://%s/%s (%d bytes)", bucket, key, info.size)
        self._notify(info)
        return info

    def _fill_temporary(
        self, fill: Callable[[_HashingWriter], object]
    ) -> tuple[Path, str, os.stat_result]:
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
                # A rename keeps size, mtime and inode, so this is the stored object's identity.
                stat = os.fstat(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary, writer.hexdigest(), stat

    def _commit(
        self,
        bucket: str,
        key: str,
        temporary: Path,
        target: tuple[int, str],
        etag: str,
        stat: os.stat_result,
    ) -> ObjectInfo:
        # The rename happens under the database write lock, so a concurrent scan finds either
        # no file or a file already recorded, and never records it a second time. Renaming
        # onto a planted link replaces the link itself; its target is never touched.
        parent, name = target
        with self._database() as connection, write_transaction(connection):
            try:
                os.replace(temporary, name, dst_dir_fd=parent)
            except IsADirectoryError as error:
                raise StorageError(
                    f"cannot store s3://{bucket}/{key}: a folder of that name exists here, "
                    f"because other keys start with '{key}/' (S3 allows both; this store cannot)"
                ) from error
            sequencer = self._next_sequencer(connection, bucket)
            self._record(connection, bucket, key, stat, etag, sequencer)
        return _info(bucket, key, stat, etag, sequencer)

    def _put_folder_placeholder(self, bucket: str, key: str) -> ObjectInfo:
        # A folder stands for the zero-byte object S3 keeps under a key ending in '/'.
        self._check_storable(key)
        folders = key.rstrip("/").split("/")
        os.close(_open_folders(self._bucket_root(bucket, create=True), folders, bucket, key, True))
        with self._database() as connection, write_transaction(connection):
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
        with self._open_object(bucket, key) as (handle, stat):
            return self._sync_metadata(bucket, key, handle, stat)

    def get_object(self, bucket: str, key: str) -> bytes:
        with self._open_object(bucket, key) as (handle, _):
            return handle.read()

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        with self._open_object(bucket, key) as (source, _):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("wb") as target:
                    shutil.copyfileobj(source, target, COPY_CHUNK_BYTES)
            except OSError as error:
                raise StorageError(f"cannot write {str(path)!r}: {error.strerror}") from error

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        for key, _, _ in self.scan(bucket, prefix):
            try:
                yield self.head_object(bucket, key)
            except ObjectNotFoundError:
                continue  # removed, or replaced by something that is not an object, since the scan

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
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            start = _open_folders(root, folder.split("/") if folder else [], bucket, prefix, False)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            entries = _walk_entries(start, f"{folder}/" if folder else "")
        finally:
            os.close(start)
        found = []
        for key, stat in entries:
            reason = _skip_reason(key, stat)
            if reason is not None:
                skip(repr(key) if reason == NOT_UTF8 else key, reason)
            elif key.startswith(prefix):
                found.append((key.encode("utf-8"), key, stat))
        # S3 lists keys in UTF-8 byte order; Path order would differ ("a/b" before "a-c").
        for _, key, stat in sorted(found):
            yield key, root / key, stat

    # -- metadata -------------------------------------------------------------------------

    def _sync_metadata(
        self, bucket: str, key: str, handle: BinaryIO, stat: os.stat_result
    ) -> ObjectInfo:
        with self._database() as connection:
            row = connection.execute(
                "SELECT * FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
            ).fetchone()
            if row is not None and _same_file(row, stat):
                return _info(bucket, key, stat, row["etag"], row["sequencer"])
            try:
                etag = _md5_of(handle)
            except OSError as error:
                raise StorageError(f"cannot read s3://{bucket}/{key}: {error.strerror}") from error
            with write_transaction(connection):
                # Another process may have recorded this same file since the read above.
                row = connection.execute(
                    "SELECT * FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
                ).fetchone()
                # The descriptor's file is the one hashed, even if the name was replaced since.
                current = os.fstat(handle.fileno())
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
    def _next_sequencer(connection: Connection, bucket: str) -> str:
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

    def _database(self) -> AbstractContextManager[Connection]:
        return closing_connection(self._db, lock_wait_seconds=self.lock_wait_seconds)

    # -- paths ----------------------------------------------------------------------------

    def _bucket_root(self, bucket: str, *, create: bool = False) -> Path:
        check_bucket_name(bucket)
        root = self.buckets_root / bucket
        if create:
            root.mkdir(exist_ok=True)
        return root

    @staticmethod
    def _check_storable(key: str) -> None:
        check_key(key)
        for segment in key.split("/"):
            if len(segment.encode()) > MAX_SEGMENT_BYTES:
                raise InvalidKeyError(
                    f"object key {key[:60]!r}... has a path segment longer than "
                    f"{MAX_SEGMENT_BYTES} bytes, which the local store cannot hold"
                )

    @contextmanager
    def _parent_folder(
        self, bucket: str, key: str, *, create: bool = False
    ) -> Iterator[tuple[int, str]]:
        """Yield a descriptor of the folder that holds ``key``, and the key's last segment.

        Without ``create``, raises FileNotFoundError or NotADirectoryError when a folder of
        the key is missing. Raises InvalidKeyError when one is a symbolic link.
        """
        self._check_storable(key)
        *folders, name = key.split("/")
        root = self._bucket_root(bucket, create=create)
        parent = _open_folders(root, folders, bucket, key, create)
        try:
            yield parent, name
        finally:
            os.close(parent)

    def open_object(
        self, bucket: str, key: str
    ) -> AbstractContextManager[tuple[BinaryIO, os.stat_result]]:
        """Open an object for reading, with its file status, as a context manager.

        Raises ObjectNotFoundError when there is none, and InvalidKeyError for a link.
        """
        return self._open_object(bucket, key)

    @contextmanager
    def _open_object(self, bucket: str, key: str) -> Iterator[tuple[BinaryIO, os.stat_result]]:
        """Open an object for reading without following links; raise if there is none."""
        if key.endswith("/"):
            raise ObjectNotFoundError(bucket, key)
        try:
            with self._parent_folder(bucket, key) as (parent, name):
                descriptor = os.open(name, _READ_FLAGS, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError) as error:
            raise ObjectNotFoundError(bucket, key) from error
        except InvalidKeyError:
            raise
        except OSError as error:
            raise _unusable_entry(bucket, key, error) from error
        stat = os.fstat(descriptor)
        if not S_ISREG(stat.st_mode):
            # A folder (other keys start with this key and '/'), a FIFO or a device.
            os.close(descriptor)
            raise ObjectNotFoundError(bucket, key)
        with os.fdopen(descriptor, "rb") as handle:
            yield handle, stat


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


def _open_folders(root: Path, folders: list[str], bucket: str, key: str, create: bool) -> int:
    """Open the folder ``root/folders...`` one segment at a time, never through a link.

    ``root`` itself (the bucket folder) may be a link that the operator made. With ``create``
    missing folders are made; without it FileNotFoundError or NotADirectoryError is raised.
    """
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in folders:
            child = _open_child_folder(descriptor, name, bucket, key, create)
            os.close(descriptor)
            descriptor = child
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _open_child_folder(parent: int, name: str, bucket: str, key: str, create: bool) -> int:
    for attempt in range(2):
        try:
            return os.open(name, _FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create or attempt:
                raise
        except NotADirectoryError:
            # O_DIRECTORY with O_NOFOLLOW answers ENOTDIR for a link as for a file.
            if S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise InvalidKeyError(
                    f"object key {key!r} passes through a symbolic link ({name!r}) in bucket "
                    f"{bucket!r}; links are never followed"
                ) from None
            if not create:
                raise
            raise StorageError(
                f"cannot store s3://{bucket}/{key}: a part of its path is an object already "
                "(S3 allows keys 'a' and 'a/b' together; this store cannot)"
            ) from None
        # Another process may make it meanwhile; the next open checks what it is.
        with suppress(FileExistsError):
            os.mkdir(name, dir_fd=parent)
    raise FileNotFoundError(errno.ENOENT, f"folder {name!r} vanished while it was made")


def _check_not_link(parent: int, name: str, bucket: str, key: str) -> None:
    # The rename that stores an object would replace a planted link, not write through it;
    # this check only turns that case into a clear error.
    try:
        linked = S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return
    if linked:
        raise InvalidKeyError(
            f"object s3://{bucket}/{key} is a symbolic link; links are never followed, so "
            "remove the link to store the object"
        )


def _unusable_entry(bucket: str, key: str, error: OSError) -> StorageError:
    """Translate the error of opening an object's own name with O_NOFOLLOW."""
    if error.errno == errno.ELOOP:
        return InvalidKeyError(
            f"object s3://{bucket}/{key} is a symbolic link; links are never followed"
        )
    return StorageError(f"cannot open s3://{bucket}/{key}: {error.strerror}")


def _walk_entries(start: int, base: str) -> list[tuple[str, os.stat_result]]:
    """Return (key, lstat) of every entry below the open folder ``start`` that is not a folder.

    Links to folders are returned, not entered; ``base`` is the key prefix of ``start``.
    """
    entries = []
    for folder, folders, names, descriptor in os.fwalk(".", dir_fd=start, follow_symlinks=False):
        relative = "" if folder == "." else folder.removeprefix("./") + "/"
        for name in sorted(folders) + names:
            try:
                stat = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing
            if name in folders and not S_ISLNK(stat.st_mode):
                continue
            entries.append((base + relative + name, stat))
    return entries


def _skip_reason(key: str, stat: os.stat_result) -> str | None:
    """Return why a file found in a bucket folder is not an object, or None."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return NOT_UTF8
    if S_ISLNK(stat.st_mode):
        return "it is a symbolic link, which the store never follows"
    if not S_ISREG(stat.st_mode):
        return "it is not a regular file"
    try:
        check_key(key)
    except InvalidKeyError as error:
        return f"its name is not a valid key: {error}"
    return None


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


def _md5_of(handle: BinaryIO) -> str:
    digest = hashlib.md5()
    handle.seek(0)
    while chunk := handle.read(COPY_CHUNK_BYTES):
        digest.update(chunk)
    handle.seek(0)
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
