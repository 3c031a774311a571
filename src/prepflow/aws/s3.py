"""The S3 object store: the ObjectStore port on Amazon S3 (or any S3 endpoint) through boto3.

Callers see the behaviour of the local folder store. Keys and bucket names are checked before
any request, and a missing object raises ``ObjectNotFoundError``. Every other failure raises
``StorageError`` with the operation, the S3 URI and what to do, and keeps the AWS error as its
cause. Differences that come from S3 itself:

- ETags are as S3 returns them: quoted, and ``"<hex>-<parts>"`` for a multipart upload.
- ``sequencer`` is always None, because HeadObject and ListObjectsV2 do not return one (the S3
  event notification carries it). ``version_id`` is set on versioned buckets.
- A missing bucket raises ``StorageError``, where the local store treats it as empty.
  NOTE: HeadObject cannot tell a missing bucket from a missing key (a HEAD error has no body),
  so ``head_object`` and ``download_file`` raise ``ObjectNotFoundError`` for both.
- Folder placeholders (zero-byte objects whose key ends in '/') are listed like any object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from s3transfer.exceptions import RetriesExceededError
from s3transfer.subscribers import BaseSubscriber

from prepflow.errors import ObjectNotFoundError, StorageError
from prepflow.storage.base import ObjectInfo, ObjectStore, check_bucket_name, check_key, s3_uri

logger = logging.getLogger(__name__)

# ListObjectsV2 returns at most 1,000 keys per response (its MaxKeys limit).
MAX_PAGE_SIZE = 1000

# The classic transfer manager uses the client it is given, so its endpoint, credentials and
# retry settings apply. boto3 may otherwise pick its CRT manager, which builds its own client.
DEFAULT_TRANSFER_CONFIG = TransferConfig(preferred_transfer_client="classic")

_AWS_ERRORS = (ClientError, BotoCoreError, RetriesExceededError)

# GetObject returns NoSuchKey. A HEAD response has no body, so HeadObject (also inside
# download_file) returns the bare HTTP status as the code.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_ACCESS_CODES = frozenset({"AccessDenied", "Forbidden", "403", "AllAccessDisabled"})
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
    }
)
_REGION_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "301"})
_UNAVAILABLE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "503"}
)

# The IAM action each S3 API operation needs, from the Service Authorization Reference,
# "Actions, resources, and condition keys for Amazon S3". Every step of a multipart upload
# needs s3:PutObject.
_IAM_ACTIONS = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
}


class S3ObjectStore(ObjectStore):
    """Buckets and objects on S3; see the module docstring for how it matches the local store.

    ``transfer_config`` sets the multipart threshold and part size of ``upload_file`` and
    ``download_file``. ``page_size`` is the MaxKeys of each ListObjectsV2 request.
    """

    def __init__(
        self,
        client: Any,
        *,
        transfer_config: TransferConfig | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size {page_size} is outside 1 to {MAX_PAGE_SIZE}")
        self._client = client
        self._transfer_config = transfer_config or DEFAULT_TRANSFER_CONFIG
        self._page_size = page_size

    # -- writes ---------------------------------------------------------------------------

    def put_object(self, bucket: str, key: str, body: bytes) -> ObjectInfo:
        _check_location(bucket, key)
        try:
            response = self._client.put_object(Bucket=bucket, Key=key, Body=body)
        except _AWS_ERRORS as error:
            raise _translate(error, f"write {s3_uri(bucket, key)}", bucket, key) from error
        logger.debug("put s3://%s/%s (%d bytes)", bucket, key, len(body))
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(body),
            etag=response["ETag"],
            last_modified=_response_time(response),
            version_id=_version_id(response),
        )

    def upload_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ObjectInfo:
        """Upload ``path`` through the transfer manager, in parts above the multipart threshold.

        The returned metadata comes from a HeadObject after the upload, because the transfer
        manager returns none. So the caller needs s3:GetObject as well as s3:PutObject, and a
        writer that replaces the object in between is seen instead. ``progress``, if given,
        receives the bytes of each part sent, from the manager's threads.
        """
        _check_location(bucket, key)
        uri = s3_uri(bucket, key)
        try:
            subscribers = [_ProgressSubscriber(progress)] if progress is not None else None
            self._transfer(
                lambda manager: manager.upload(str(path), bucket, key, subscribers=subscribers)
            )
        except _AWS_ERRORS as error:
            raise _translate(error, f"upload {str(path)!r} to {uri}", bucket, key) from error
        except FileNotFoundError as error:
            raise StorageError(f"cannot upload {str(path)!r}: file not found") from error
        except OSError as error:
            raise StorageError(f"cannot upload {str(path)!r}: {error.strerror}") from error
        logger.debug("uploaded %s to %s", path, uri)
        return self.head_object(bucket, key)

    # -- reads ----------------------------------------------------------------------------

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        _check_location(bucket, key)
        try:
            response = self._client.head_object(Bucket=bucket, Key=key)
        except _AWS_ERRORS as error:
            action = f"read metadata of {s3_uri(bucket, key)}"
            raise _translate(error, action, bucket, key, reading=True) from error
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=response["ContentLength"],
            etag=response["ETag"],
            last_modified=response["LastModified"].astimezone(UTC),
            version_id=_version_id(response),
        )

    def get_object(self, bucket: str, key: str) -> bytes:
        _check_location(bucket, key)
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
            with closing(response["Body"]) as body:
                content: bytes = body.read()
        except _AWS_ERRORS as error:
            action = f"read {s3_uri(bucket, key)}"
            raise _translate(error, action, bucket, key, reading=True) from error
        return content

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Download through the transfer manager, which writes a temporary file and renames it."""
        _check_location(bucket, key)
        uri = s3_uri(bucket, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._transfer(lambda manager: manager.download(bucket, key, str(path)))
        except _AWS_ERRORS as error:
            action = f"download {uri} to {str(path)!r}"
            raise _translate(error, action, bucket, key, reading=True) from error
        except OSError as error:
            raise StorageError(f"cannot write {str(path)!r}: {error}") from error

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects under ``prefix`` in the order ListObjectsV2 returns them.

        That order is UTF-8 binary key order for general purpose buckets, as in the local store.
        NOTE: S3 directory buckets (S3 Express One Zone) list in no defined order.
        """
        check_bucket_name(bucket)
        if prefix:
            check_key(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": self._page_size}
            )
        )
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except _AWS_ERRORS as error:
                raise _translate(error, f"list {s3_uri(bucket, prefix)}", bucket, prefix) from error
            for item in page.get("Contents", ()):
                yield _listed_info(bucket, item)

    # -- transfers ------------------------------------------------------------------------

    def _transfer(self, submit: Callable[[Any], Any]) -> None:
        # One manager per transfer, as boto3's client.upload_file does: its threads end with it.
        with create_transfer_manager(self._client, self._transfer_config) as manager:
            submit(manager).result()


class _ProgressSubscriber(BaseSubscriber):  # type: ignore[misc]
    """Hands the transfer manager's progress reports to a plain callable."""

    def __init__(self, progress: Callable[[int], None]) -> None:
        self._progress = progress

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._progress(bytes_transferred)


def _check_location(bucket: str, key: str) -> None:
    check_bucket_name(bucket)
    check_key(key)


def _listed_info(bucket: str, item: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=item["Key"],
        size=item["Size"],
        etag=item["ETag"],
        last_modified=item["LastModified"].astimezone(UTC),
    )


def _version_id(response: Mapping[str, Any]) -> str | None:
    # S3 returns "null" for an object written while versioning was off or suspended. That id
    # does not tell two uploads apart, so it counts as no version id.
    version: str | None = response.get("VersionId")
    return None if version in (None, "", "null") else version


def _response_time(response: Mapping[str, Any]) -> datetime:
    # NOTE: PutObject returns no LastModified, so the response's Date header is used instead.
    # It can differ from the LastModified that HeadObject shows, by up to the upload's time.
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    date = headers.get("date")
    if date:
        try:
            return parsedate_to_datetime(date).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


def _translate(
    error: Exception, action: str, bucket: str, key: str, *, reading: bool = False
) -> StorageError:
    """Return the prepflow error for an AWS error raised while doing ``action`` on ``key``.

    Only a read (``reading``) turns a 404 into ObjectNotFoundError. On a write or a listing a
    404 means that the bucket is missing.
    """
    if isinstance(error, RetriesExceededError):
        return StorageError(
            f"cannot {action}: the transfer failed after every retry ({error.last_exception}); "
            "check the network connection and try again"
        )
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", "Unknown"))
        if reading and code in _NOT_FOUND_CODES:
            return ObjectNotFoundError(bucket, key)
        operation = error.operation_name
        message = details.get("Message") or "no message"
        hint = _client_error_hint(code, operation, bucket, key)
        return StorageError(f"cannot {action}: {operation} returned {code} ({message}); {hint}")
    return StorageError(f"cannot {action}: {error}; {_connection_hint(error)}")


def _client_error_hint(code: str, operation: str, bucket: str, key: str) -> str:
    if code in _ACCESS_CODES:
        permission = _IAM_ACTIONS.get(operation, f"s3:{operation}")
        target = f"s3://{bucket}" if permission == "s3:ListBucket" else s3_uri(bucket, key)
        hint = (
            f"allow {permission} on {target} in the IAM policy of the role or user, and check "
            "that no bucket policy denies it"
        )
        if operation in ("HeadObject", "GetObject"):
            # HeadObject and GetObject API reference: without s3:ListBucket, S3 returns 403
            # instead of 404 for a key that does not exist.
            hint += "; S3 also returns 403 for a missing object when s3:ListBucket is not allowed"
        return hint
    if code == "NoSuchBucket":
        return (
            f"bucket {bucket!r} does not exist; check the bucket names in the settings "
            "(APP_PREFIX and the PREPFLOW_*_BUCKET variables)"
        )
    if code in _CREDENTIAL_CODES:
        return (
            "check the AWS credentials (profile, environment variables or role) and renew them "
            "if they expired"
        )
    if code in _REGION_CODES:
        return f"bucket {bucket!r} is in another region; set AWS_REGION to the bucket's region"
    if code in _UNAVAILABLE_CODES:
        return "S3 is unavailable or throttling after the client's retries; try again later"
    return "look up this error code in the S3 API reference, 'Error responses'"


def _connection_hint(error: Exception) -> str:
    if isinstance(error, NoCredentialsError):
        return "configure AWS credentials (a profile, environment variables or a role)"
    if isinstance(error, BotocoreConnectionError | HTTPClientError):
        return "check the network connection, AWS_REGION and any endpoint URL (AWS_ENDPOINT_URL)"
    return "try again, and if it fails again, check the network connection and the endpoint"
