"""The job store on a SQLite file, safe for several processes sharing one prepflow home."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prepflow.errors import JobStoreError
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord, JobStore
from prepflow.local.sqlite import (
    DEFAULT_LOCK_WAIT_SECONDS,
    Connection,
    closing_connection,
    ensure_schema,
    write_transaction,
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        job_name TEXT PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at)",
    # The objects a batch job claims, beyond its own idempotency key (which stays in jobs).
    """CREATE TABLE IF NOT EXISTS claims (
        claim_key TEXT PRIMARY KEY,
        job_name TEXT NOT NULL)""",
)


class SqliteJobStore(JobStore):
    """Job records in one table; each record's fields are stored as JSON in ``body``."""

    def __init__(self, path: Path, *, lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS) -> None:
        self.path = path
        self.lock_wait_seconds = lock_wait_seconds
        try:
            ensure_schema(path, _SCHEMA, lock_wait_seconds=lock_wait_seconds)
        except sqlite3.Error as error:
            raise JobStoreError(f"cannot open job database {str(path)!r}: {error}") from error

    def _insert_if_absent(self, record: JobRecord) -> bool:
        with self._connection() as connection, write_transaction(connection):
            # The write lock is held from here on, so no other writer can take a key
            # between this check and the inserts below.
            if _any_key_taken(connection, record.claim_keys):
                return False
            cursor = connection.execute(
                "INSERT OR IGNORE INTO jobs "
                "(job_name, idempotency_key, status, created_at, version, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.job_name,
                    record.idempotency_key,
                    record.status.value,
                    record.created_at.isoformat(),
                    record.version,
                    record.model_dump_json(),
                ),
            )
            if cursor.rowcount != 1:
                return False
            connection.executemany(
                "INSERT INTO claims (claim_key, job_name) VALUES (?, ?)",
                [(key, record.job_name) for key in record.claim_keys[1:]],
            )
            return True

    def _load(self, job_name: str) -> JobRecord | None:
        return self._load_one("SELECT body FROM jobs WHERE job_name = ?", job_name)

    def _load_by_key(self, idempotency_key: str) -> JobRecord | None:
        record = self._load_one("SELECT body FROM jobs WHERE idempotency_key = ?", idempotency_key)
        if record is not None:
            return record
        return self._load_one(
            "SELECT jobs.body FROM claims JOIN jobs ON jobs.job_name = claims.job_name "
            "WHERE claims.claim_key = ?",
            idempotency_key,
        )

    def _replace_if_version(self, record: JobRecord, expected_version: int) -> bool:
        with self._connection() as connection, write_transaction(connection):
            cursor = connection.execute(
                "UPDATE jobs SET status = ?, version = ?, body = ? "
                "WHERE job_name = ? AND version = ?",
                (
                    record.status.value,
                    record.version,
                    record.model_dump_json(),
                    record.job_name,
                    expected_version,
                ),
            )
            return cursor.rowcount == 1

    def _scan(self, status: JobStatus | None, limit: int) -> list[JobRecord]:
        query = "SELECT body FROM jobs"
        parameters: tuple[object, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            parameters = (status.value,)
        query += " ORDER BY created_at DESC, job_name LIMIT ?"
        with self._connection() as connection:
            rows = connection.execute(query, (*parameters, limit)).fetchall()
        return [JobRecord.model_validate_json(row["body"]) for row in rows]

    def _load_one(self, query: str, value: str) -> JobRecord | None:
        with self._connection() as connection:
            row = connection.execute(query, (value,)).fetchone()
        return None if row is None else JobRecord.model_validate_json(row["body"])

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        # A lock held too long raises DatabaseBusyError (retried inside); any other SQLite
        # failure becomes a JobStoreError that names the file.
        try:
            with closing_connection(self.path, lock_wait_seconds=self.lock_wait_seconds) as db:
                yield db
        except sqlite3.Error as error:
            raise JobStoreError(
                f"job database {str(self.path)!r} failed: {error}; check that the file and its "
                "folder are writable and the disk is not full"
            ) from error


def _any_key_taken(connection: sqlite3.Connection, keys: list[str]) -> bool:
    """Tell whether a stored record has one of ``keys`` as its idempotency key or a claim."""
    for key in keys:
        row = connection.execute(
            "SELECT 1 FROM jobs WHERE idempotency_key = ? "
            "UNION ALL SELECT 1 FROM claims WHERE claim_key = ? LIMIT 1",
            (key, key),
        ).fetchone()
        if row is not None:
            return True
    return False
