"""SQLite connections that several prepflow processes can share safely.

WAL lets readers run beside one writer. ``BEGIN IMMEDIATE`` takes the write lock before the
first read of a read-modify-write, so two processes never both act on a stale read. The busy
timeout makes a writer wait for the lock instead of failing at once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_SECONDS = 30.0


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode; callers group writes with ``write_transaction``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def ensure_schema(path: Path, statements: tuple[str, ...]) -> None:
    """Create the tables of ``statements`` and switch the file to WAL (a persistent setting)."""
    with closing_connection(path) as connection:
        _use_wal(connection)
        with write_transaction(connection):
            for statement in statements:
                connection.execute(statement)


def _use_wal(connection: sqlite3.Connection) -> None:
    # Switching to WAL needs an exclusive lock and SQLite does not wait for it through the
    # busy timeout, so two processes opening a new database at once retry here.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    delay = 0.01
    while True:
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() == "wal":
            return
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


@contextmanager
def closing_connection(path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(path)
    try:
        yield connection
    finally:
        connection.close()


@contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Hold the database write lock for the whole block; commit on success, roll back on error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
