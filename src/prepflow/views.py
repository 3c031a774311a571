"""The JSON view of a processing job, shared by ``prepflow jobs ... --json`` and the dashboard.

One function builds each shape, so the command line and ``GET /api/jobs`` cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prepflow.jobs.sharding import instance_count
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord
from prepflow.local.app import LocalApp
from prepflow.processing.paths import ARTIFACTS_FILE, REJECTED_FILE, REPORT_HTML

if TYPE_CHECKING:
    from prepflow.aws.app import AwsApp

# Record fields that ``jobs describe`` adds to the summary of ``jobs list``.
DETAIL_FIELDS = {
    "idempotency_key",
    "manifest_uri",
    "exit_message",
    "waiting_reason",
    "log_tail",
    "request",
}
# Timestamps (ISO 8601, UTC) that both shapes carry; None until the event happened.
TIME_FIELDS = {"created_at", "started_at", "ended_at"}


def job_summary(view: LocalApp | AwsApp, record: JobRecord) -> dict[str, Any]:
    """Build one job as ``jobs list --json`` prints it and ``GET /api/jobs`` returns it."""
    return {
        "job_name": record.job_name,
        "status": record.status.value,
        "inputs": record.inputs,
        "outputs": view.output_files(record),
        "failure_reason": record.failure_reason,
        "rows_in": record.rows_in,
        "rows_out": record.rows_out,
        "rows_rejected": record.rows_rejected,
        "rejected": side_output(view, record, "rejected", REJECTED_FILE),
        "report": side_output(view, record, "report", REPORT_HTML),
        "artifacts": side_output(view, record, "artifacts", ARTIFACTS_FILE),
        "duration_s": record.duration_s,
        "log_uri": record.log_uri,
        **record.model_dump(mode="json", include=TIME_FIELDS),
    }


def job_details(view: LocalApp | AwsApp, record: JobRecord) -> dict[str, Any]:
    """Build one job as ``jobs describe --json`` prints it and ``GET /api/jobs/{name}`` returns."""
    return {**job_summary(view, record), **record.model_dump(mode="json", include=DETAIL_FIELDS)}


def side_output(
    view: LocalApp | AwsApp, record: JobRecord, output_name: str, file_name: str
) -> dict[str, str] | None:
    """Return the URI (and local path) of a file in one of the built-in step's side outputs."""
    if not isinstance(view, LocalApp):
        return view.side_output(record, output_name, file_name) or None
    if record.status != JobStatus.COMPLETED:
        return None
    outputs = record.request.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for output in outputs:
        if output.get("OutputName") == output_name:
            folder = output["S3Output"]["S3Uri"].rstrip("/") + "/"
            if instance_count(record.request) > 1:
                # Each host wrote its own file (report-algo-2.html), so show their folder.
                path = view.local_path(folder)
                return {"uri": folder, "path": str(path)} if path.is_dir() else None
            uri = folder + file_name
            path = view.local_path(uri)
            if path.is_file():
                return {"uri": uri, "path": str(path)}
    return None
