"""SQLite connections that several prepflow processes can share safely.

WAL lets readers run beside one writer. ``BEGIN IMMEDIATE`` takes the write lock before the
first read of a read-modify-write, so two processes never both act on a stale read.

A writer waits for a lock that another connection holds in two layers. SQLite's busy timeout
waits up to ``BUSY_TIMEOUT_SECONDS`` per attempt. After that the attempt is logged and retried
with backoff until ``lock_wait_seconds`` have passed in all, and then ``DatabaseBusyError``
names the file. So a change is either written or reported as not written, never dropped.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prepflow.errors import DatabaseBusyError

logger = logging.getLogger(__name__)

# SQLite's own wait for a lock, per attempt. Short, so a long wait is logged while it lasts.
BUSY_TIMEOUT_SECONDS = 2.0
# Total wait for a lock before a write fails; PREPFLOW_DB_LOCK_WAIT_SECONDS sets it.
DEFAULT_LOCK_WAIT_SECONDS = 60.0
FIRST_RETRY_DELAY_SECONDS = 0.05
MAX_RETRY_DELAY_SECONDS = 1.0


class Connection(sqlite3.Connection):
    """A connection with its file path and the time a write may wait for the lock."""

    path: Path
    lock_wait_seconds: float


def connect(path: Path, *, lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS) -> Connection:
    """Open ``path`` in autocommit mode; callers group writes with ``write_transaction``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    busy_timeout = min(BUSY_TIMEOUT_SECONDS, lock_wait_seconds)
    connection = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, factory=Connection
    )
    connection.path = path
    connection.lock_wait_seconds = lock_wait_seconds
    connection.row_factory = sqlite3.Row
    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def ensure_schema(
    path: Path,
    statements: tuple[str, ...],
    *,
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
) -> None:
    """Create the tables of ``statements`` and switch the file to WAL (a persistent setting)."""
    with closing_connection(path, lock_wait_seconds=lock_wait_seconds) as connection:
        _use_wal(connection)
        with write_transaction(connection):
            for statement in statements:
                connection.execute(statement)


def _use_wal(connection: Connection) -> None:
    # Switching to WAL needs an exclusive lock and SQLite does not wait for it through the
    # busy timeout, so two processes opening a new database at once retry here.
    started = time.monotonic()
    delay = 0.01
    while True:
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            return
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
            if time.monotonic() - started >= connection.lock_wait_seconds:
                raise _busy_error(connection, time.monotonic() - started) from error
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


@contextmanager
def closing_connection(
    path: Path, *, lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS
) -> Iterator[Connection]:
    connection = connect(path, lock_wait_seconds=lock_wait_seconds)
    try:
        yield connection
    finally:
        connection.close()


@contextmanager
def write_transaction(connection: Connection) -> Iterator[Connection]:
    """Hold the database write lock for the whole block; commit on success, roll back on error.

    Raises DatabaseBusyError when the lock stays taken for the connection's
    ``lock_wait_seconds``; nothing of the block is written then.
    """
    _begin_immediate(connection)
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def is_busy(error: sqlite3.OperationalError) -> bool:
    """Tell whether ``error`` is SQLITE_BUSY or SQLITE_LOCKED: another connection has the lock."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        # Extended result codes (SQLITE_BUSY_SNAPSHOT, ...) keep the primary code in the low byte.
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


def _begin_immediate(connection: Connection) -> None:
    """Take the write lock, retrying with jittered backoff while another connection holds it."""
    started = time.monotonic()
    delay = FIRST_RETRY_DELAY_SECONDS
    attempt = 1
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
            waited = time.monotonic() - started
            if waited >= connection.lock_wait_seconds:
                raise _busy_error(connection, waited) from error
            logger.warning(
                "database %s is locked by another connection (attempt %d, waited %.1f s of "
                "%.0f s); retrying",
                connection.path,
                attempt,
                waited,
                connection.lock_wait_seconds,
            )
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)
            attempt += 1
            continue
        if attempt > 1:
            logger.info(
                "database %s: took the write lock on attempt %d after %.1f s",
                connection.path,
                attempt,
                time.monotonic() - started,
            )
        return


def _busy_error(connection: Connection, waited: float) -> DatabaseBusyError:
    return DatabaseBusyError(connection.path, waited, connection.lock_wait_seconds)
