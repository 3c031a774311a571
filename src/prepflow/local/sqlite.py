"""SQLite connections that several prepflow processes can share safely.

WAL lets readers run beside one writer. ``BEGIN IMMEDIATE`` takes the write lock before the
first read of a read-modify-write, so two processes never both act on a stale read. The busy
timeout makes a writer wait for the lock instead of failing at once.
"""

from __future__ import annotations

import sqlite3
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
        connection.execute("PRAGMA journal_mode = WAL")
        with write_transaction(connection):
            for statement in statements:
                connection.execute(statement)


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
