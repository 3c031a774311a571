"""The AWS side of ``prepflow destroy``: stop a deployment's running jobs and empty its buckets.

CloudFormation deletes a bucket only when it is empty, and a versioned bucket is empty only
when every object version and delete marker is gone. A processing job keeps running after its
stack is deleted but loses its role, so its jobs are stopped first. Every function takes a
boto3 client, so tests pass moto's or one with botocore's ``Stubber``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from prepflow.errors import JobError, StorageError

logger = logging.getLogger(__name__)

# DeleteObjects takes at most 1,000 keys per request (Amazon S3 API Reference, DeleteObjects).
MAX_DELETE_BATCH = 1000
# ListObjectVersions returns at most 1,000 versions and delete markers per response.
LIST_VERSIONS_PAGE_SIZE = 1000
# ListProcessingJobs returns at most 100 summaries per page (its MaxResults limit).
LIST_JOBS_PAGE_SIZE = 100
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})


@dataclass
class StoppedJobs:
    """The outcome of ``stop_running_jobs``, by job name."""

    stopped: list[str] = field(default_factory=list)
    # Jobs that SageMaker would not stop (ValidationException), most often because they were
    # already stopping or had just ended; the value is SageMaker's message.
    not_stopped: dict[str, str] = field(default_factory=dict)


def stop_running_jobs(sagemaker: Any, job_name_prefix: str) -> StoppedJobs:
    """Request a stop of every InProgress processing job named ``<job_name_prefix>-...``.

    Raises JobError when listing the jobs fails or SageMaker rejects a stop for another
    reason than ValidationException. A stop request returns at once, before the job ends.
    """
    result = StoppedJobs()
    for job_name in _running_jobs(sagemaker, job_name_prefix):
        try:
            sagemaker.stop_processing_job(ProcessingJobName=job_name)
        except ClientError as error:
            if _code(error) != "ValidationException":
                raise JobError(
                    f"StopProcessingJob failed for {job_name!r}: {_message(error)}; stop it with "
                    f"'prepflow jobs stop {job_name} --target aws' or in the SageMaker console"
                ) from error
            # SageMaker rejects a stop of a job that is no longer InProgress, which happens
            # when the job ended or began stopping after the listing.
            logger.info("processing job %s not stopped: %s", job_name, _message(error))
            result.not_stopped[job_name] = _message(error)
            continue
        logger.info("stop requested for processing job %s", job_name)
        result.stopped.append(job_name)
    return result


def _running_jobs(sagemaker: Any, job_name_prefix: str) -> Iterator[str]:
    """Yield the names of InProgress jobs that start with ``<job_name_prefix>-``."""
    params: dict[str, Any] = {
        "NameContains": job_name_prefix,
        "StatusEquals": "InProgress",
        "MaxResults": LIST_JOBS_PAGE_SIZE,
    }
    while True:
        try:
            page = sagemaker.list_processing_jobs(**params)
        except (ClientError, BotoCoreError) as error:
            raise JobError(
                f"ListProcessingJobs failed for job names containing {job_name_prefix!r}: "
                f"{error}; check the credentials and the region, then run destroy again"
            ) from error
        for summary in page.get("ProcessingJobSummaries", []):
            # NameContains matches anywhere in the name; a deployment's jobs start with it.
            name = summary["ProcessingJobName"]
            running = summary.get("ProcessingJobStatus") == "InProgress"
            if running and name.startswith(f"{job_name_prefix}-"):
                yield name
        token = page.get("NextToken")
        if not token:
            return
        params["NextToken"] = token


def empty_bucket(s3: Any, bucket: str) -> int | None:
    """Delete every object version and delete marker in ``bucket``; return how many.

    Returns None when the bucket does not exist. Works on unversioned buckets too, where
    each object is listed as one version. Raises StorageError when a listing or a delete
    fails, naming the first keys S3 would not delete.
    """
    deleted = 0
    try:
        for batch in _version_batches(s3, bucket):
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            _raise_delete_errors(bucket, response.get("Errors", []))
            deleted += len(batch)
    except ClientError as error:
        if _code(error) in _MISSING_BUCKET_CODES:
            logger.info("bucket %s not found, so there is nothing to empty", bucket)
            return None
        raise StorageError(
            f"emptying bucket {bucket!r} failed: {_code(error)}: {_message(error)}; check "
            "that the credentials may list and delete object versions in it"
        ) from error
    except BotoCoreError as error:
        raise StorageError(f"emptying bucket {bucket!r} failed: {error}") from error
    logger.info("emptied bucket %s: %d object versions and delete markers deleted", bucket, deleted)
    return deleted


def _version_batches(s3: Any, bucket: str) -> Iterator[list[dict[str, str]]]:
    """Yield the bucket's versions and delete markers in batches that DeleteObjects accepts.

    Each listing starts from the beginning, after the previous one's entries were deleted.
    Continuing from the key and version markers instead ended after the first page on moto
    5.2, because the marker's version no longer existed. The loop ends at an empty listing,
    and a failed delete raises, so it cannot list the same entries forever.
    """
    while True:
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=LIST_VERSIONS_PAGE_SIZE)
        entries = [
            {"Key": entry["Key"], "VersionId": entry["VersionId"]}
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if not entries:
            return
        # S3 returns at most MaxKeys entries per page, but the batches keep to the limit anyway.
        for start in range(0, len(entries), MAX_DELETE_BATCH):
            yield entries[start : start + MAX_DELETE_BATCH]


def _raise_delete_errors(bucket: str, errors: list[dict[str, str]]) -> None:
    if not errors:
        return
    examples = "; ".join(
        f"{error.get('Key')!r} ({error.get('Code')}: {error.get('Message')})"
        for error in errors[:3]
    )
    raise StorageError(
        f"S3 did not delete {len(errors)} object version(s) in bucket {bucket!r}, for example "
        f"{examples}; fix the cause (an object lock or a bucket policy) and run destroy again"
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", error))
