"""The SageMaker job backend: processing jobs through boto3's ``sagemaker`` client.

SageMaker's error codes become prepflow's errors here, with the cause kept. The codes come
from the API reference (``API_CreateProcessingJob``, ``API_DescribeProcessingJob``,
``API_StopProcessingJob`` and ``CommonErrors``):

- ``ResourceInUse``: the job name exists -> ``JobExistsError`` (for prepflow's deterministic
  names, "already started").
- ``ValidationException``: a request SageMaker rejects -> ``JobSpecError`` with its message.
- ``ResourceLimitExceeded``: a quota is reached -> ``CapacityError`` naming the instance type.
- ``ThrottlingException``: retried with backoff, then ``ThrottledError``.
- ``ResourceNotFound``: no job of that name -> ``JobNotFoundError``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from prepflow.errors import (
    CapacityError,
    JobError,
    JobExistsError,
    JobNotFoundError,
    JobSpecError,
    ThrottledError,
)
from prepflow.jobs.backend import JobBackend
from prepflow.jobs.spec import JobDescription, JobStatus, ProcessingJobSpec

logger = logging.getLogger(__name__)

THROTTLING_CODES = frozenset({"ThrottlingException"})
# Backoff between throttled attempts: a random delay up to BASE * 2**(attempt - 1), at most
# MAX (full jitter), so the callers that were throttled together do not retry together.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# ListProcessingJobs returns at most 100 summaries a page.
LIST_PAGE_SIZE = 100
# A Stopped job that ran within this fraction of MaxRuntimeInSeconds counts as stopped at the
# limit. NOTE: the API reference does not say at which moment SageMaker starts the runtime
# clock, so ProcessingStartTime to ProcessingEndTime may fall slightly short of the limit.
RUNTIME_LIMIT_SLACK = 0.02


class SageMakerBackend(JobBackend):
    """The job backend of SageMaker Processing. Every call retries throttling before it fails."""

    def __init__(
        self,
        client: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
        throttle_retries: int = 4,
    ) -> None:
        if throttle_retries < 0:
            raise ValueError(f"throttle_retries must be 0 or more, got {throttle_retries}")
        self.client = client
        self._sleep = sleep
        self.throttle_retries = throttle_retries

    def submit(self, spec: ProcessingJobSpec) -> None:
        """Create the job. Raises JobExistsError, JobSpecError, CapacityError or ThrottledError."""
        name = spec.processing_job_name
        try:
            self._call("CreateProcessingJob", **spec.to_request())
        except ClientError as error:
            code, message = _code(error), _message(error)
            if code == "ResourceInUse":
                raise JobExistsError(name) from error
            if code == "ValidationException":
                raise JobSpecError(f"CreateProcessingJob rejected {name!r}: {message}") from error
            if code == "ResourceLimitExceeded":
                instance_type = spec.processing_resources.cluster_config.instance_type
                raise CapacityError(instance_type, message) from error
            raise _job_error("CreateProcessingJob", name, error) from error
        logger.info("created processing job %s", name)

    def describe(self, job_name: str) -> JobDescription:
        """Return the job's state. Raises JobNotFoundError for a name SageMaker does not know."""
        try:
            response = self._call("DescribeProcessingJob", ProcessingJobName=job_name)
        except ClientError as error:
            if _is_not_found(error):
                raise JobNotFoundError(job_name) from error
            raise _job_error("DescribeProcessingJob", job_name, error) from error
        return description_from_response(response)

    def stop(self, job_name: str) -> None:
        """Ask SageMaker to stop the job. A job already ended or stopping is left as it is."""
        try:
            self._call("StopProcessingJob", ProcessingJobName=job_name)
        except ClientError as error:
            if _is_not_found(error):
                raise JobNotFoundError(job_name) from error
            if _code(error) != "ValidationException":
                raise _job_error("StopProcessingJob", job_name, error) from error
            # SageMaker rejects a stop of a job that is not InProgress, so the job's status
            # decides whether the rejection matters.
            status = self.describe(job_name).status
            if status == JobStatus.IN_PROGRESS:
                raise _job_error("StopProcessingJob", job_name, error) from error
            logger.info("job %s is already %s, so there is nothing to stop", job_name, status)
            return
        logger.info("stop requested for processing job %s", job_name)

    def list_jobs(self, name_prefix: str, status: JobStatus | None = None) -> list[JobDescription]:
        """Return the jobs whose names start with ``name_prefix``, newest first.

        A summary carries no StoppingCondition, so a Stopped job's reason cannot state whether
        it reached its runtime limit. ``describe`` can.
        """
        params: dict[str, Any] = {
            "NameContains": name_prefix,
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": LIST_PAGE_SIZE,
        }
        if status is not None:
            params["StatusEquals"] = status.value
        jobs: list[JobDescription] = []
        while True:
            try:
                page = self._call("ListProcessingJobs", **params)
            except ClientError as error:
                raise _job_error("ListProcessingJobs", name_prefix, error) from error
            for summary in page.get("ProcessingJobSummaries", []):
                # NameContains matches anywhere in the name; prepflow's prefix is its start.
                if summary.get("ProcessingJobName", "").startswith(name_prefix):
                    jobs.append(description_from_response(summary))
            token = page.get("NextToken")
            if not token:
                return jobs
            params["NextToken"] = token

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Call a SageMaker operation, retrying ThrottlingException with backoff.

        Raises ThrottledError once every attempt was throttled, JobError for a failure below
        the API (connection, credentials), and ClientError for every other service error.
        """
        method = getattr(self.client, _snake_case(operation))
        target = params.get("ProcessingJobName") or params.get("NameContains")
        attempts = self.throttle_retries + 1
        attempt = 1
        while True:
            try:
                response: dict[str, Any] = method(**params)
                return response
            except ClientError as error:
                if _code(error) not in THROTTLING_CODES:
                    raise
                if attempt == attempts:
                    logger.error(
                        "%s for %s throttled on all %d attempts", operation, target, attempts
                    )
                    raise ThrottledError(operation, _message(error), attempts=attempts) from error
                delay = random.uniform(0, _backoff_bound(attempt))
                logger.warning(
                    "%s for %s throttled (attempt %d of %d), retrying in %.2f s",
                    operation,
                    target,
                    attempt,
                    attempts,
                    delay,
                )
                self._sleep(delay)
                attempt += 1
            except BotoCoreError as error:
                raise JobError(
                    f"{operation} failed before SageMaker returned a response: {error}. Check the "
                    "network, the region and the credentials"
                ) from error


def description_from_response(response: Mapping[str, Any]) -> JobDescription:
    """Map a DescribeProcessingJob response to a JobDescription.

    Also accepts the ``detail`` of an EventBridge "SageMaker Processing Job State Change"
    event and a ListProcessingJobs summary, which use the same field names. A ``Failed`` job
    keeps SageMaker's FailureReason, and a ``Stopped`` job gets a reason that states whether
    it reached MaxRuntimeInSeconds. Raises JobError when the name or status is missing or
    unknown.
    """
    name = response.get("ProcessingJobName")
    if not isinstance(name, str) or not name:
        raise JobError("invalid SageMaker response: ProcessingJobName is missing")
    raw_status = response.get("ProcessingJobStatus")
    try:
        status = JobStatus(str(raw_status))
    except ValueError as error:
        raise JobError(
            f"processing job {name!r} has an unknown status {raw_status!r}, expected one of "
            f"{[s.value for s in JobStatus]}"
        ) from error

    start = _timestamp(response.get("ProcessingStartTime"))
    end = _timestamp(response.get("ProcessingEndTime"))
    failure_reason = response.get("FailureReason") or None
    if status == JobStatus.STOPPED:
        failure_reason = _stopped_reason(response, start, end, failure_reason)
    return JobDescription(
        job_name=name,
        status=status,
        failure_reason=failure_reason,
        exit_message=response.get("ExitMessage") or None,
        creation_time=_timestamp(response.get("CreationTime")),
        start_time=start,
        end_time=end,
    )


def _stopped_reason(
    response: Mapping[str, Any],
    start: datetime | None,
    end: datetime | None,
    sagemaker_reason: str | None,
) -> str:
    limit = (response.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    if not isinstance(limit, int | float) or isinstance(limit, bool):
        reason = "stopped (the response names no MaxRuntimeInSeconds)"
    elif start is None or end is None:
        reason = (
            f"stopped, but without its start and end times it is unknown whether it reached "
            f"the runtime limit (MaxRuntimeInSeconds {limit}) or was stopped on request"
        )
    else:
        elapsed = (end - start).total_seconds()
        if elapsed >= limit * (1 - RUNTIME_LIMIT_SLACK):
            reason = (
                f"stopped at the runtime limit: ran {elapsed:.0f} s, MaxRuntimeInSeconds is "
                f"{limit}. Raise PREPFLOW_MAX_RUNTIME_SECONDS or split the input"
            )
        else:
            reason = (
                f"stopped on request (StopProcessingJob) after {elapsed:.0f} s, before the "
                f"runtime limit (MaxRuntimeInSeconds {limit})"
            )
    if sagemaker_reason:
        reason += f". FailureReason: {sagemaker_reason}"
    return reason


def _timestamp(value: Any) -> datetime | None:
    """Read a time as boto3 (datetime), EventBridge (epoch number) or JSON (ISO 8601) gives it."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        # Epoch milliseconds above 1e11 (any date after 1973), seconds below (any date
        # before the year 5138), so either unit reads right.
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            logger.warning("ignored a processing job time that is not ISO 8601: %r", value)
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    logger.warning("ignored a processing job time of type %s", type(value).__name__)
    return None


def _backoff_bound(attempt: int) -> float:
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", ""))


def _is_not_found(error: ClientError) -> bool:
    # DescribeProcessingJob and StopProcessingJob document ResourceNotFound, but moto 5
    # returns ValidationException "Could not find processing job ..." instead.
    code, message = _code(error), _message(error).lower()
    if code == "ResourceNotFound":
        return True
    return code == "ValidationException" and ("could not find" in message or "not found" in message)


def _job_error(operation: str, subject: str, error: ClientError) -> JobError:
    return JobError(
        f"{operation} failed for {subject!r}: {_code(error) or 'unknown error'}: {_message(error)}"
    )


def _snake_case(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
