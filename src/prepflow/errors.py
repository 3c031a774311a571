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
    ├── DatabaseBusyError           a local SQLite database stayed locked past the wait limit
    ├── JobStoreError               the job store refused a write
    │   ├── JobTableNotFoundError   the DynamoDB job table does not exist
    │   └── IllegalTransitionError  a status change the job lifecycle does not allow
    ├── IsolationError              the local runner cannot give a script ``/opt/ml``
    └── ProcessingError             the processing step rejected its input (inside the job)

Library errors (``OSError``, ``sqlite3.Error``, ``json.JSONDecodeError``, botocore's
``ClientError``) are translated where they happen, with ``raise ... from`` so the cause is kept.
``CapacityError`` and ``ThrottledError`` are temporary: the same request may succeed later.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path
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


class DatabaseBusyError(PrepflowError):
    """Another connection held a local SQLite database's write lock for the whole wait.

    The change that waited was not written. It is not a ``JobStoreError``: the database is
    usable, only busy, so the fix is to free the lock, not to change the home.
    """

    def __init__(self, path: Path, waited_seconds: float, limit_seconds: float) -> None:
        super().__init__(
            f"database {str(path)!r} stayed locked by another process for {waited_seconds:.1f} s "
            f"(PREPFLOW_DB_LOCK_WAIT_SECONDS={limit_seconds:g}), so the change was not written. "
            f"Find the process that holds it open (for example 'fuser {path}'), let it finish "
            "or stop it, and run the command again; or raise PREPFLOW_DB_LOCK_WAIT_SECONDS"
        )
        self.path = path
        self.waited_seconds = waited_seconds
        self.limit_seconds = limit_seconds


class JobStoreError(PrepflowError):
    """The job store refused or failed a write."""


class JobTableNotFoundError(JobStoreError):
    """The DynamoDB job table named by the settings does not exist in the region."""


class IllegalTransitionError(JobStoreError):
    """A status change that the processing-job lifecycle does not allow."""


class IsolationError(PrepflowError):
    """The local runner cannot give a user script its own ``/opt/ml`` on this machine."""


class ProcessingError(PrepflowError):
    """The processing step rejected its input; the message is the job's failure reason."""


# A full file system or an exhausted quota: a retry meets the same wall until space is freed.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(error: OSError) -> bool:
    """Tell whether ``error`` is a full file system or an exhausted quota.

    polars raises OSError without ``errno`` and with Rust's text, "No space left on device
    (os error 28)", so the number is also looked for in the message.
    """
    if error.errno is not None:
        return error.errno in NO_SPACE_ERRNOS
    return any(f"(os error {number})" in str(error) for number in NO_SPACE_ERRNOS)


def describe_write_error(error: OSError, path: str | Path) -> str:
    """Return the message of a failed write to ``path``, with the fix when the disk is full."""
    if is_no_space(error):
        # The C library's wording (strerror), which polars' errors carry too.
        cause = "Disk quota exceeded" if error.errno == errno.EDQUOT else "No space left on device"
        return (
            f"{cause} while writing {path}: free space on that file system (or raise the "
            "quota), then upload the file again"
        )
    return f"cannot write {path}: {error.strerror or error}"
