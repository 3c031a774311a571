"""Read-only queries of the local mode, behind the dashboard's JSON API.

Every object is read through the local store's ``open_object``, which checks the key, never
follows a symbolic link and opens regular files only. So a job name or a key taken from a URL
cannot reach a file outside the bucket folders.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from prepflow.errors import ObjectNotFoundError, StorageError
from prepflow.jobs.sharding import host_names, instance_count
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord
from prepflow.local.app import LocalApp
from prepflow.processing.paths import (
    REJECTED_FILE,
    REJECTED_OUTPUT_NAME,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_OUTPUT_NAME,
    per_host_name,
)
from prepflow.storage.base import parse_s3_uri, s3_uri
from prepflow.views import job_details, job_summary

logger = logging.getLogger(__name__)

# Jobs listed when the request names no limit: the default of ``prepflow jobs list``.
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
# Bytes shown from the end of each host's log; the whole log is a download away.
LOG_TAIL_BYTES = 64 * 1024
# Rejected rows shown on the job page, and the characters kept of each value.
REJECTED_SAMPLE_ROWS = 50
MAX_CELL_CHARS = 400
# A report of a few hundred columns is well under this; a larger object is not parsed.
MAX_REPORT_BYTES = 32 * 1024 * 1024


class Dashboard:
    """Read-only views of the jobs of one prepflow home."""

    def __init__(self, local: LocalApp) -> None:
        self.local = local

    @property
    def buckets(self) -> frozenset[str]:
        """The buckets whose objects ``/files/`` serves: the deployment's own five."""
        names = self.local.settings.buckets
        return frozenset(
            {names.raw, names.processed, names.model_artifacts, names.logs, names.feature_store}
        )

    def list_jobs(self, *, status: JobStatus | None, limit: int) -> list[dict[str, Any]]:
        """Return the newest jobs as ``prepflow jobs list --json`` prints them."""
        records = self.local.jobs.list_jobs(status=status, limit=limit)
        return [job_summary(self.local, self.local.refresh(r.job_name)) for r in records]

    def job(self, job_name: str) -> dict[str, Any]:
        """Return one job as ``prepflow jobs describe --json`` prints it.

        Raises JobNotFoundError for an unknown name.
        """
        return job_details(self.local, self.local.refresh(job_name))

    def logs(self, job_name: str) -> list[dict[str, Any]]:
        """Return the end of each host's log: host, uri, size, truncated and text."""
        record = self.local.jobs.get(job_name)
        bucket = self.local.settings.buckets.logs
        tails = []
        for host in host_names(instance_count(record.request)):
            key = f"logs/{job_name}/{host}.log"
            tail = _read_tail(self.local, bucket, key)
            if tail is not None:
                tails.append({"host": host, "uri": s3_uri(bucket, key), **tail})
        return tails

    def reports(self, job_name: str) -> list[dict[str, Any]]:
        """Return the data-quality report of each host that wrote one, parsed from its JSON."""
        record = self.local.jobs.get(job_name)
        folder = _output_folder(record, REPORT_OUTPUT_NAME)
        if folder is None or record.status != JobStatus.COMPLETED:
            return []
        reports = []
        for host in _hosts_of(record):
            uri = folder + per_host_name(REPORT_JSON, host)
            report = self._read_report(uri)
            if report is not None:
                html_uri = folder + per_host_name(REPORT_HTML, host)
                reports.append({"host": host, "uri": uri, "html_uri": html_uri, "report": report})
        return reports

    def rejected_sample(self, job_name: str) -> dict[str, Any]:
        """Return the first rejected rows with their reasons, across the hosts' files."""
        record = self.local.jobs.get(job_name)
        folder = _output_folder(record, REJECTED_OUTPUT_NAME)
        sample: dict[str, Any] = {
            "total": record.rows_rejected,
            "limit": REJECTED_SAMPLE_ROWS,
            "columns": [],
            "rows": [],
            "files": [],
        }
        if folder is None or record.status != JobStatus.COMPLETED:
            return sample
        for host in _hosts_of(record):
            uri = folder + per_host_name(REJECTED_FILE, host)
            wanted = REJECTED_SAMPLE_ROWS - len(sample["rows"])
            found = self._read_csv_head(uri, wanted)
            if found is None:
                continue
            columns, rows = found
            sample["files"].append(uri)
            sample["columns"] = sample["columns"] or columns
            sample["rows"].extend(rows)
        return sample

    @contextmanager
    def open_file(self, bucket: str, key: str) -> Iterator[tuple[BinaryIO, int]]:
        """Open one object of the deployment's buckets for download, with its size.

        Raises ObjectNotFoundError for another bucket or a missing object, and InvalidKeyError
        for a key the store rejects (``..`` segments, control characters, links).
        """
        if bucket not in self.buckets:
            raise ObjectNotFoundError(bucket, key)
        with self.local.store.open_object(bucket, key) as (handle, stat):
            yield handle, stat.st_size

    def _read_report(self, uri: str) -> dict[str, Any] | None:
        bucket, key = parse_s3_uri(uri)
        try:
            with self.local.store.open_object(bucket, key) as (handle, stat):
                if stat.st_size > MAX_REPORT_BYTES:
                    raise StorageError(
                        f"report {uri} has {stat.st_size} bytes, more than the dashboard "
                        f"shows ({MAX_REPORT_BYTES}); download it instead"
                    )
                report = json.load(handle)
        except ObjectNotFoundError:
            return None
        except ValueError as error:
            raise StorageError(f"report {uri} is not valid JSON: {error}") from error
        return report if isinstance(report, dict) else None

    def _read_csv_head(self, uri: str, rows: int) -> tuple[list[str], list[list[str]]] | None:
        """Return the header and up to ``rows`` rows of a CSV object; None if it is missing."""
        bucket, key = parse_s3_uri(uri)
        try:
            with self.local.store.open_object(bucket, key) as (handle, _):
                text = io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")
                return _csv_head(csv.reader(text), rows, uri)
        except ObjectNotFoundError:
            return None


def _csv_head(
    reader: Iterator[list[str]], rows: int, uri: str
) -> tuple[list[str], list[list[str]]]:
    header = next(reader, [])
    head: list[list[str]] = []
    try:
        for row in reader:
            if len(head) >= rows:
                break
            head.append([_shorten(cell) for cell in row])
    except csv.Error as error:
        # A value longer than the csv module's field limit ends the sample, not the page.
        logger.warning("stopped reading rejected rows of %s: %s", uri, error)
    return header, head


def _read_tail(local: LocalApp, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        with local.store.open_object(bucket, key) as (handle, stat):
            start = max(stat.st_size - LOG_TAIL_BYTES, 0)
            handle.seek(start)
            data = handle.read(LOG_TAIL_BYTES)
    except ObjectNotFoundError:
        return None
    if start > 0:
        # The first line was cut by the byte offset: drop it.
        data = data.partition(b"\n")[2]
    return {
        "size": stat.st_size,
        "truncated": start > 0,
        "text": data.decode("utf-8", errors="replace"),
    }


def _output_folder(record: JobRecord, output_name: str) -> str | None:
    """Return the S3 prefix (ending in '/') of a named output of the job, if it has one."""
    for output in record.request.get("ProcessingOutputConfig", {}).get("Outputs", []):
        if output.get("OutputName") == output_name:
            uri = str(output["S3Output"]["S3Uri"])
            return uri.rstrip("/") + "/"
    return None


def _hosts_of(record: JobRecord) -> list[str | None]:
    """Return the host part of per-host file names: None alone for a job on one instance."""
    count = instance_count(record.request)
    return [None] if count == 1 else list(host_names(count))


def _shorten(value: str) -> str:
    return value if len(value) <= MAX_CELL_CHARS else value[: MAX_CELL_CHARS - 1] + "\u2026"
