"""prepflow's exceptions: one hierarchy, one class per condition a caller handles differently.

    PrepflowError
    ├── ConfigurationError          settings or wiring that cannot work; the CLI exits with 2
    │   ├── RecursiveOutputError    an output location would trigger the pipeline again
    │   └── RecipeError             a recipe that fails validation, found before any data is read
    ├── StorageError                an object store operation failed
    │   ├── InvalidKeyError         a key the store cannot hold safely (``../x``, NUL, too long)
    │   └── ObjectNotFoundError     no object under that bucket and key (S3's ``NoSuchKey``)
    ├── EventError                  a trigger event that cannot be parsed
    ├── TriggerFailedError          a trigger's notifications started no job (Lambda raises it)
    ├── NotificationError           publishing a job's end to SNS failed
    ├── JobError                    a processing-job request or lookup failed
    │   ├── JobSpecError            a request SageMaker would reject (``ValidationException``)
    │   ├── JobExistsError          the job name is in use (``ResourceInUse``)
    │   ├── JobNotFoundError        no job with that name
    │   ├── CapacityError           no capacity for the job now (``ResourceLimitExceeded``)
    │   └── ThrottledError          the backend throttled the request and retries ran out
    ├── JobStoreError               the job store refused a write
    │   └── IllegalTransitionError  a status change the job lifecycle does not allow
    ├── IsolationError              the local runner cannot give a script ``/opt/ml``
    └── ProcessingError             the processing step rejected its input (inside the job)

Library errors (``OSError``, ``sqlite3.Error``, ``json.JSONDecodeError``, botocore's
``ClientError``) are translated where they happen, with ``raise ... from`` so the cause is kept.
``CapacityError`` and ``ThrottledError`` are temporary: the same request may succeed later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PrepflowError(Exception):
    """Base of every error prepflow raises on purpose."""


class ConfigurationError(PrepflowError):
    """Settings or wiring that cannot work; fix the configuration and start again."""


class RecursiveOutputError(ConfigurationError):
    """An output location lies where new objects start the pipeline again."""


class RecipeError(ConfigurationError):
    """A recipe that fails validation; the message names each field path, value and rule."""


class StorageError(PrepflowError):
    """An object store operation failed."""


class InvalidKeyError(StorageError):
    """An object key that the store cannot hold without escaping its bucket or aliasing another."""


class ObjectNotFoundError(StorageError):
    """No object under the given bucket and key."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(
            f"object not found: s3://{bucket}/{key} (it may have been deleted after the upload "
            "event was sent; upload it again to process it)"
        )
        self.bucket = bucket
        self.key = key


class EventError(PrepflowError):
    """A trigger event that cannot be parsed."""


class TriggerFailedError(PrepflowError):
    """One or more notifications of a trigger event started no job; each one is named.

    ``failures`` are the orchestrator's outcomes, each with a ``subject`` and a ``reason``.
    """

    def __init__(self, failures: Sequence[Any]) -> None:
        details = "; ".join(f"{failure.subject}: {failure.reason}" for failure in failures)
        super().__init__(f"{len(failures)} trigger notification(s) failed: {details}")
        self.failures = list(failures)


class NotificationError(PrepflowError):
    """Publishing a job notification failed."""


class JobError(PrepflowError):
    """A processing-job request or lookup failed."""


class JobSpecError(JobError):
    """A job request that SageMaker would reject with ``ValidationException``."""


class JobExistsError(JobError):
    """The job name is already in use; for a deterministic name this means 'already started'."""

    def __init__(self, job_name: str) -> None:
        super().__init__(f"a processing job named {job_name!r} already exists")
        self.job_name = job_name


class JobNotFoundError(JobError):
    """No job with the given name."""

    def __init__(self, job_name: str) -> None:
        super().__init__(
            f"processing job not found: {job_name!r} (run 'prepflow jobs list' to see job names)"
        )
        self.job_name = job_name


class CapacityError(JobError):
    """The account has no capacity for the job now (SageMaker's ``ResourceLimitExceeded``).

    The request may succeed once running jobs end or the quota is raised.
    """

    def __init__(self, instance_type: str, message: str) -> None:
        super().__init__(f"ResourceLimitExceeded for {instance_type}: {message}")
        self.instance_type = instance_type
        self.message = message


class ThrottledError(JobError):
    """The backend throttled a request (``ThrottlingException``) on every attempt."""

    def __init__(self, operation: str, message: str, *, attempts: int) -> None:
        super().__init__(f"{operation} throttled on all {attempts} attempts: {message}")
        self.operation = operation
        self.message = message
        self.attempts = attempts


class JobStoreError(PrepflowError):
    """The job store refused or failed a write."""


class IllegalTransitionError(JobStoreError):
    """A status change that the processing-job lifecycle does not allow."""


class IsolationError(PrepflowError):
    """The local runner cannot give a user script its own ``/opt/ml`` on this machine."""


class ProcessingError(PrepflowError):
    """The processing step rejected its input; the message is the job's failure reason."""
