"""The job store on a SQLite file, safe for several processes sharing one prepflow home."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from prepflow.errors import JobStoreError
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord, JobStore
from prepflow.local.sqlite import closing_connection, ensure_schema, write_transaction

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
)


class SqliteJobStore(JobStore):
    """Job records in one table; each record's fields are stored as JSON in ``body``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            ensure_schema(path, _SCHEMA)
        except sqlite3.Error as error:
            raise JobStoreError(f"cannot open job database {str(path)!r}: {error}") from error

    def _insert_if_absent(self, record: JobRecord) -> bool:
        with self._connection() as connection, write_transaction(connection):
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
            return cursor.rowcount == 1

    def _load(self, job_name: str) -> JobRecord | None:
        return self._load_one("SELECT body FROM jobs WHERE job_name = ?", job_name)

    def _load_by_key(self, idempotency_key: str) -> JobRecord | None:
        return self._load_one("SELECT body FROM jobs WHERE idempotency_key = ?", idempotency_key)

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

    def _connection(self) -> AbstractContextManager[sqlite3.Connection]:
        return closing_connection(self.path)
