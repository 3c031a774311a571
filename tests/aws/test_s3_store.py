"""S3ObjectStore behaviour that only S3 has: AWS errors translated, quoted and multipart ETags,
paged listings, version ids.

Error responses are given by botocore's Stubber, with the codes, messages and HTTP statuses
that S3 returns (S3 API reference, "Error responses"). Stubbed clients point at a closed port
on 127.0.0.1, so a request without a stubbed response fails here instead of reaching AWS.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from prepflow.aws.s3 import S3ObjectStore
from prepflow.errors import ObjectNotFoundError, StorageError
from tests.aws.conftest import REGION

BUCKET = "acme-ml-raw"
KEY = "input/sales report Q1.csv"
URI = f"s3://{BUCKET}/{KEY}"
PART_SIZE = 5 * 1024 * 1024
SMALL_PARTS = TransferConfig(
    multipart_threshold=1024 * 1024,
    multipart_chunksize=PART_SIZE,
    preferred_transfer_client="classic",
)
# Request ids that S3 returns with every error. botocore moves both into ResponseMetadata.
S3_RESPONSE_META = {
    "RequestId": "7F5A3C2B1E0D9A8B",
    "HostId": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6",
}


def closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def local_client(**session_arguments: Any) -> Any:
    session = boto3.session.Session(region_name=REGION, **session_arguments)
    return session.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=2,
        ),
    )


@pytest.fixture
def stubbed() -> Iterator[tuple[S3ObjectStore, Stubber]]:
    client = local_client()
    with Stubber(client) as stubber:
        yield S3ObjectStore(client, transfer_config=SMALL_PARTS), stubber
        stubber.assert_no_pending_responses()


def add_s3_error(
    stubber: Stubber, method: str, code: str, message: str, status: int, **meta: str
) -> None:
    stubber.add_client_error(
        method,
        service_error_code=code,
        service_message=message,
        http_status_code=status,
        service_error_meta=meta or None,
        response_meta=S3_RESPONSE_META,
    )


def aws_code(error: BaseException) -> str:
    cause = error.__cause__
    assert isinstance(cause, ClientError), f"cause is {cause!r}, expected a ClientError"
    return str(cause.response["Error"]["Code"])


# -- AccessDenied -------------------------------------------------------------------------------


def test_get_access_denied(stubbed):
    store, stubber = stubbed
    add_s3_error(stubber, "get_object", "AccessDenied", "Access Denied", 403)

    with pytest.raises(StorageError) as caught:
        store.get_object(BUCKET, KEY)

    message = str(caught.value)
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert message.startswith(f"cannot read {URI}: GetObject returned AccessDenied (Access Denied)")
    assert f"allow s3:GetObject on {URI}" in message
    assert "s3:ListBucket" in message
    assert aws_code(caught.value) == "AccessDenied"


def test_head_forbidden_is_not_missing(stubbed):
    # HeadObject has no response body, so S3's 403 reaches botocore as the bare status.
    store, stubber = stubbed
    add_s3_error(stubber, "head_object", "403", "Forbidden", 403)

    with pytest.raises(StorageError) as caught:
        store.head_object(BUCKET, KEY)

    message = str(caught.value)
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert f"cannot read metadata of {URI}: HeadObject returned 403 (Forbidden)" in message
    assert "s3:GetObject" in message
    assert "S3 also returns 403 for a missing object when s3:ListBucket is not allowed" in message


def test_put_access_denied(stubbed):
    store, stubber = stubbed
    add_s3_error(stubber, "put_object", "AccessDenied", "Access Denied", 403)

    with pytest.raises(StorageError) as caught:
        store.put_object(BUCKET, KEY, b"x")

    message = str(caught.value)
    assert message.startswith(f"cannot write {URI}: PutObject returned AccessDenied")
    assert f"allow s3:PutObject on {URI}" in message
    assert "s3:ListBucket" not in message
    assert aws_code(caught.value) == "AccessDenied"


def test_list_access_denied(stubbed):
    store, stubber = stubbed
    add_s3_error(stubber, "list_objects_v2", "AccessDenied", "Access Denied", 403)

    with pytest.raises(StorageError) as caught:
        list(store.list_objects(BUCKET, "input/"))

    message = str(caught.value)
    assert message.startswith(f"cannot list s3://{BUCKET}/input/: ListObjectsV2 returned")
    assert f"allow s3:ListBucket on s3://{BUCKET} " in message
    assert aws_code(caught.value) == "AccessDenied"


def test_upload_access_denied(stubbed, tmp_path):
    store, stubber = stubbed
    source = tmp_path / "a.csv"
    source.write_bytes(b"a,b\n1,2\n")
    add_s3_error(stubber, "put_object", "AccessDenied", "Access Denied", 403)

    with pytest.raises(StorageError) as caught:
        store.upload_file(BUCKET, KEY, source)

    message = str(caught.value)
    assert message.startswith(f"cannot upload {str(source)!r} to {URI}: PutObject returned")
    assert f"allow s3:PutObject on {URI}" in message
    assert aws_code(caught.value) == "AccessDenied"


def test_multipart_upload_access_denied(stubbed, tmp_path):
    store, stubber = stubbed
    source = tmp_path / "big.bin"
    source.write_bytes(b"\0" * (2 * 1024 * 1024))
    add_s3_error(stubber, "create_multipart_upload", "AccessDenied", "Access Denied", 403)

    with pytest.raises(StorageError) as caught:
        store.upload_file(BUCKET, KEY, source)

    message = str(caught.value)
    assert "CreateMultipartUpload returned AccessDenied (Access Denied)" in message
    assert f"allow s3:PutObject on {URI}" in message


def test_download_access_denied(stubbed, tmp_path):
    store, stubber = stubbed
    target = tmp_path / "down" / "a.csv"
    add_s3_error(stubber, "head_object", "403", "Forbidden", 403)

    with pytest.raises(StorageError) as caught:
        store.download_file(BUCKET, KEY, target)

    assert not isinstance(caught.value, ObjectNotFoundError)
    assert str(caught.value).startswith(f"cannot download {URI} to {str(target)!r}: HeadObject")
    assert not target.exists()


# -- NoSuchBucket and NoSuchKey -----------------------------------------------------------------


def test_put_no_such_bucket(stubbed):
    store, stubber = stubbed
    add_s3_error(
        stubber,
        "put_object",
        "NoSuchBucket",
        "The specified bucket does not exist",
        404,
        BucketName=BUCKET,
    )

    with pytest.raises(StorageError) as caught:
        store.put_object(BUCKET, KEY, b"x")

    message = str(caught.value)
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert "PutObject returned NoSuchBucket (The specified bucket does not exist)" in message
    assert f"bucket {BUCKET!r} does not exist" in message
    assert "PREPFLOW_*_BUCKET" in message
    assert aws_code(caught.value) == "NoSuchBucket"


def test_get_no_such_bucket_is_not_missing_object(stubbed):
    store, stubber = stubbed
    add_s3_error(
        stubber,
        "get_object",
        "NoSuchBucket",
        "The specified bucket does not exist",
        404,
        BucketName=BUCKET,
    )

    with pytest.raises(StorageError) as caught:
        store.get_object(BUCKET, KEY)

    assert not isinstance(caught.value, ObjectNotFoundError)
    assert f"bucket {BUCKET!r} does not exist" in str(caught.value)


def test_list_no_such_bucket(stubbed):
    store, stubber = stubbed
    add_s3_error(
        stubber,
        "list_objects_v2",
        "NoSuchBucket",
        "The specified bucket does not exist",
        404,
        BucketName=BUCKET,
    )

    with pytest.raises(StorageError) as caught:
        list(store.list_objects(BUCKET))

    assert f"cannot list s3://{BUCKET}/: ListObjectsV2 returned NoSuchBucket" in str(caught.value)
    assert aws_code(caught.value) == "NoSuchBucket"


def test_get_no_such_key(stubbed):
    store, stubber = stubbed
    add_s3_error(
        stubber, "get_object", "NoSuchKey", "The specified key does not exist.", 404, Key=KEY
    )

    with pytest.raises(ObjectNotFoundError) as caught:
        store.get_object(BUCKET, KEY)

    assert caught.value.bucket == BUCKET
    assert caught.value.key == KEY
    assert aws_code(caught.value) == "NoSuchKey"


def test_head_not_found(stubbed):
    store, stubber = stubbed
    add_s3_error(stubber, "head_object", "404", "Not Found", 404)

    with pytest.raises(ObjectNotFoundError) as caught:
        store.head_object(BUCKET, KEY)

    assert caught.value.key == KEY
    assert aws_code(caught.value) == "404"


# -- other errors -------------------------------------------------------------------------------

PERMANENT_REDIRECT_MESSAGE = (
    "The bucket you are attempting to access must be addressed using the specified endpoint. "
    "Please send all future requests to this endpoint."
)
OTHER_ERRORS = [
    ("SlowDown", "Please reduce your request rate.", 503, "try again later"),
    ("InternalError", "We encountered an internal error. Please try again.", 500, "try again"),
    ("ExpiredToken", "The provided token has expired.", 400, "AWS credentials"),
    (
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
        403,
        "AWS credentials",
    ),
    ("PermanentRedirect", PERMANENT_REDIRECT_MESSAGE, 301, "set AWS_REGION"),
    (
        "InvalidObjectState",
        "The operation is not valid for the object's storage class",
        403,
        "S3 API reference",
    ),
]


@pytest.mark.parametrize(
    ("code", "aws_message", "status", "hint"), OTHER_ERRORS, ids=[row[0] for row in OTHER_ERRORS]
)
def test_get_error_hint(stubbed, code, aws_message, status, hint):
    store, stubber = stubbed
    add_s3_error(stubber, "get_object", code, aws_message, status)

    with pytest.raises(StorageError) as caught:
        store.get_object(BUCKET, KEY)

    message = str(caught.value)
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert f"GetObject returned {code} ({aws_message})" in message
    assert hint in message
    assert aws_code(caught.value) == code


def test_connection_refused():
    store = S3ObjectStore(local_client())

    with pytest.raises(StorageError) as caught:
        store.head_object(BUCKET, KEY)

    message = str(caught.value)
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert message.startswith(f"cannot read metadata of {URI}: Could not connect")
    assert "check the network connection" in message


def test_no_credentials(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    store = S3ObjectStore(local_client())

    with pytest.raises(StorageError, match="configure AWS credentials"):
        store.get_object(BUCKET, KEY)


# -- responses ----------------------------------------------------------------------------------


def test_put_time_from_date_header(stubbed):
    store, stubber = stubbed
    stubber.add_response(
        "put_object",
        {
            "ETag": '"9dd4e461268c8034f5c8564e155c67a6"',
            "ResponseMetadata": {"HTTPHeaders": {"date": "Tue, 04 Jun 2024 10:15:00 GMT"}},
        },
    )

    info = store.put_object(BUCKET, KEY, b"x")

    assert info.last_modified == datetime(2024, 6, 4, 10, 15, tzinfo=UTC)
    assert info.etag == '"9dd4e461268c8034f5c8564e155c67a6"'
    assert info.version_id is None


def test_null_version_id_is_none(stubbed):
    store, stubber = stubbed
    stubber.add_response(
        "head_object",
        {
            "ContentLength": 1,
            "ETag": '"9dd4e461268c8034f5c8564e155c67a6"',
            "LastModified": datetime(2024, 6, 4, 10, 15, tzinfo=UTC),
            "VersionId": "null",
        },
    )

    assert store.head_object(BUCKET, KEY).version_id is None


def test_get_reads_whole_body(stubbed):
    store, stubber = stubbed
    body = b"id,value\n" * 1000
    stubber.add_response(
        "get_object",
        {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentLength": len(body)},
        expected_params={"Bucket": BUCKET, "Key": KEY},
    )

    assert store.get_object(BUCKET, KEY) == body


@pytest.mark.parametrize("page_size", [0, 1001])
def test_page_size_out_of_range(page_size):
    with pytest.raises(ValueError, match="page_size"):
        S3ObjectStore(local_client(), page_size=page_size)


# -- against moto -------------------------------------------------------------------------------


@pytest.fixture
def moto_client(moto_in_process: None) -> Any:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return client


def test_etag_is_quoted(moto_client):
    store = S3ObjectStore(moto_client)

    info = store.put_object(BUCKET, KEY, b"hello")

    assert info.etag == f'"{hashlib.md5(b"hello").hexdigest()}"'
    assert store.head_object(BUCKET, KEY).etag == info.etag


def test_upload_above_threshold_is_multipart(moto_client, tmp_path: Path):
    store = S3ObjectStore(moto_client, transfer_config=SMALL_PARTS)
    source = tmp_path / "big.bin"
    source.write_bytes(b"\1" * (PART_SIZE + 1))

    info = store.upload_file(BUCKET, KEY, source)

    # A multipart ETag is the MD5 of the parts' MD5s, followed by the part count.
    assert info.etag.endswith('-2"')
    assert info.size == PART_SIZE + 1


def test_upload_below_threshold_is_single_part(moto_client, tmp_path: Path):
    store = S3ObjectStore(moto_client, transfer_config=SMALL_PARTS)
    source = tmp_path / "small.bin"
    body = b"\1" * 1000
    source.write_bytes(body)

    info = store.upload_file(BUCKET, KEY, source)

    assert info.etag == f'"{hashlib.md5(body).hexdigest()}"'


def test_list_pages_through_results(moto_client):
    calls: list[dict[str, Any]] = []
    moto_client.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2", lambda params, **_: calls.append(dict(params))
    )
    store = S3ObjectStore(moto_client, page_size=2)
    keys = [f"input/{index}.csv" for index in range(5)]
    for key in keys:
        store.put_object(BUCKET, key, b"x")

    listed = [info.key for info in store.list_objects(BUCKET, "input/")]

    assert listed == keys
    assert len(calls) == 3
    assert [call.get("MaxKeys") for call in calls] == [2, 2, 2]
    assert "ContinuationToken" not in calls[0]
    assert "ContinuationToken" in calls[1]


def test_list_includes_folder_placeholder(moto_client):
    store = S3ObjectStore(moto_client)
    store.put_object(BUCKET, "input/", b"")
    store.put_object(BUCKET, "input/a.csv", b"x")

    assert [info.key for info in store.list_objects(BUCKET, "input/")] == ["input/", "input/a.csv"]


def test_version_ids_on_versioned_bucket(moto_client):
    moto_client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    store = S3ObjectStore(moto_client)

    first = store.put_object(BUCKET, KEY, b"first")
    second = store.put_object(BUCKET, KEY, b"second")

    assert first.version_id is not None
    assert second.version_id is not None
    assert first.version_id != second.version_id
    assert store.head_object(BUCKET, KEY).version_id == second.version_id


def test_no_version_id_on_unversioned_bucket(moto_client):
    store = S3ObjectStore(moto_client)

    assert store.put_object(BUCKET, KEY, b"x").version_id is None
    assert store.head_object(BUCKET, KEY).version_id is None


def test_upload_progress_counts_every_part(server_client, tmp_path):
    client = server_client("s3")
    client.create_bucket(
        Bucket="progress-test", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    part = 5 * 1024 * 1024
    config = TransferConfig(
        multipart_threshold=part, multipart_chunksize=part, preferred_transfer_client="classic"
    )
    store = S3ObjectStore(client, transfer_config=config)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2 * part + 4096))
    reported: list[int] = []

    info = store.upload_file("progress-test", "input/big.bin", source, progress=reported.append)

    assert sum(reported) == source.stat().st_size
    assert len(reported) >= 3
    assert info.size == source.stat().st_size
