"""prepflow's exceptions: one hierarchy, one class per condition a caller handles differently.

    PrepflowError
    ├── ConfigurationError          settings or wiring that cannot work; the CLI exits with 2
    │   ├── RecursiveOutputError    an output location would trigger the pipeline again
    │   └── RecipeError             a recipe that fails validation, found before any data is read
    ├── StorageError                an object store operation failed
    │   ├── InvalidKeyError         a key the store cannot hold safely (``../x``, NUL, too long)
    │   └── ObjectNotFoundError     no object under that bucket and key (S3's ``NoSuchKey``)
    ├── EventError                  a trigger event that cannot be parsed
    ├── JobError                    a processing-job request or lookup failed
    │   ├── JobSpecError            a request SageMaker would reject (``ValidationException``)
    │   ├── JobExistsError          the job name is in use (``ResourceInUse``)
    │   └── JobNotFoundError        no job with that name
    ├── JobStoreError               the job store refused a write
    │   └── IllegalTransitionError  a status change the job lifecycle does not allow
    ├── IsolationError              the local runner cannot give a script ``/opt/ml``
    └── ProcessingError             the processing step rejected its input (inside the job)

Library errors (``OSError``, ``sqlite3.Error``, ``json.JSONDecodeError``) are translated where
they happen, with ``raise ... from`` so the cause is kept.
"""

from __future__ import annotations


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


class JobStoreError(PrepflowError):
    """The job store refused or failed a write."""


class IllegalTransitionError(JobStoreError):
    """A status change that the processing-job lifecycle does not allow."""


class IsolationError(PrepflowError):
    """The local runner cannot give a user script its own ``/opt/ml`` on this machine."""


class ProcessingError(PrepflowError):
    """The processing step rejected its input; the message is the job's failure reason."""
