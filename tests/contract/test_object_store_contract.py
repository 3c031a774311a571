"""One contract for every ObjectStore: each test runs on the local folder store and on
S3ObjectStore against moto's server on 127.0.0.1.

ETags are compared without their quotes: S3 quotes them and the local store does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from prepflow.aws.s3 import S3ObjectStore
from prepflow.errors import InvalidKeyError, ObjectNotFoundError, StorageError
from prepflow.storage.base import ObjectStore
from prepflow.storage.local import LocalObjectStore
from tests.aws.conftest import REGION, moto_server, server_client  # noqa: F401

# A small page, so a listing of a few objects takes several ListObjectsV2 requests.
PAGE_SIZE = 3
# S3 (and boto3's transfer manager) take parts of at least 5 MiB, except the last one. A
# threshold below one part lets a file of one part plus a little go up in two parts.
PART_SIZE = 5 * 1024 * 1024
MULTIPART_THRESHOLD = 1024 * 1024

ODD_KEYS = [
    "input/sales report Q1.csv",
    "input/c++ export (1).csv",
    "input/a+b=c.csv",
    "input/%2B literal.csv",
    "input/100% done.csv",
    "input/café münchen.csv",
    "input/日本語のファイル.csv",
    "input/emoji 📊.csv",
    "input/2024/06/04/deep/segments.csv",
    "input/ leading and trailing .csv",
    "input/quotes 'a' \"b\".csv",
]

# Keys that check_key rejects in every store.
INVALID_KEYS = ["", "../x", "a/../b", "input/..", "./a", "/abs", "a//b", "a\0b", "x" * 1025]
INVALID_BUCKETS = ["Upper", "ab", "has_underscore", "-leading"]


@pytest.fixture
def bucket() -> str:
    # moto's server lives for the whole session, so each test gets a bucket of its own.
    return f"contract-{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=["local", "s3"])
def store_and_requests(
    request: pytest.FixtureRequest, tmp_path: Path, bucket: str
) -> tuple[ObjectStore, list[str]]:
    """Return a store with ``bucket`` ready and the list of S3 requests it has sent so far."""
    sent: list[str] = []
    if request.param == "local":
        return LocalObjectStore(tmp_path / "home", region=REGION), sent

    client = request.getfixturevalue("server_client")("s3")
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.meta.events.register(
        "before-send.s3.*", lambda request, **_: sent.append(f"{request.method} {request.url}")
    )
    transfer_config = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=PART_SIZE,
        preferred_transfer_client="classic",
    )
    return S3ObjectStore(client, transfer_config=transfer_config, page_size=PAGE_SIZE), sent


@pytest.fixture
def store(store_and_requests: tuple[ObjectStore, list[str]]) -> ObjectStore:
    return store_and_requests[0]


@pytest.fixture
def sent_requests(store_and_requests: tuple[ObjectStore, list[str]]) -> list[str]:
    """Requests the S3 store sent to moto's server; always empty for the local store."""
    return store_and_requests[1]


def plain(etag: str) -> str:
    return etag.strip('"')


def md5_hex(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def keys_of(objects: Iterator[Any]) -> list[str]:
    return [info.key for info in objects]


# -- put, get, head -----------------------------------------------------------------------------


def test_put_get_round_trip(store, bucket):
    body = bytes(range(256)) * 40 + os.urandom(3000)

    store.put_object(bucket, "input/a.bin", body)

    assert store.get_object(bucket, "input/a.bin") == body


def test_put_returns_info(store, bucket):
    info = store.put_object(bucket, "input/a.csv", b"id,value\n1,2\n")

    assert info.bucket == bucket
    assert info.key == "input/a.csv"
    assert info.size == 13
    assert plain(info.etag) == md5_hex(b"id,value\n1,2\n")
    assert info.uri == f"s3://{bucket}/input/a.csv"
    assert info.last_modified.utcoffset() == timedelta(0)


def test_head_matches_put(store, bucket):
    put = store.put_object(bucket, "input/a.csv", b"hello")

    head = store.head_object(bucket, "input/a.csv")

    assert head.bucket == bucket
    assert head.key == "input/a.csv"
    assert head.size == 5
    assert head.etag == put.etag
    assert head.last_modified.utcoffset() == timedelta(0)


def test_empty_object(store, bucket):
    info = store.put_object(bucket, "input/empty.csv", b"")

    assert info.size == 0
    assert plain(info.etag) == "d41d8cd98f00b204e9800998ecf8427e"
    assert store.get_object(bucket, "input/empty.csv") == b""
    assert store.head_object(bucket, "input/empty.csv").size == 0


def test_overwrite_replaces_content(store, bucket):
    first = store.put_object(bucket, "input/a.csv", b"first version")

    second = store.put_object(bucket, "input/a.csv", b"second")

    assert store.get_object(bucket, "input/a.csv") == b"second"
    head = store.head_object(bucket, "input/a.csv")
    assert head.size == 6
    assert head.etag == second.etag
    assert plain(head.etag) != plain(first.etag)
    assert keys_of(store.list_objects(bucket, "input/")) == ["input/a.csv"]


def test_head_missing_raises_not_found(store, bucket):
    store.put_object(bucket, "input/present.csv", b"x")

    with pytest.raises(ObjectNotFoundError) as caught:
        store.head_object(bucket, "input/missing.csv")

    assert caught.value.bucket == bucket
    assert caught.value.key == "input/missing.csv"
    assert f"s3://{bucket}/input/missing.csv" in str(caught.value)


def test_get_missing_raises_not_found(store, bucket):
    store.put_object(bucket, "input/present.csv", b"x")

    with pytest.raises(ObjectNotFoundError) as caught:
        store.get_object(bucket, "input/missing.csv")

    assert caught.value.bucket == bucket
    assert caught.value.key == "input/missing.csv"


def test_download_missing_raises_not_found(store, bucket, tmp_path):
    store.put_object(bucket, "input/present.csv", b"x")
    target = tmp_path / "down" / "missing.csv"

    with pytest.raises(ObjectNotFoundError) as caught:
        store.download_file(bucket, "input/missing.csv", target)

    assert caught.value.key == "input/missing.csv"
    assert not target.exists()


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_key_round_trip(store, bucket, key):
    store.put_object(bucket, key, key.encode())

    assert store.get_object(bucket, key) == key.encode()
    assert store.head_object(bucket, key).key == key
    assert keys_of(store.list_objects(bucket)) == [key]


def test_odd_keys_listed_together(store, bucket):
    for key in ODD_KEYS:
        store.put_object(bucket, key, b"x")

    listed = keys_of(store.list_objects(bucket, "input/"))

    assert listed == sorted(ODD_KEYS, key=lambda key: key.encode())


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_key_rejected_before_any_request(store, bucket, sent_requests, tmp_path, key):
    source = tmp_path / "source.csv"
    source.write_bytes(b"x")
    target = tmp_path / "down" / "target.csv"
    before = list(sent_requests)
    calls = {
        "put_object": lambda: store.put_object(bucket, key, b"x"),
        "upload_file": lambda: store.upload_file(bucket, key, source),
        "head_object": lambda: store.head_object(bucket, key),
        "get_object": lambda: store.get_object(bucket, key),
        "download_file": lambda: store.download_file(bucket, key, target),
    }

    for name, call in calls.items():
        with pytest.raises(InvalidKeyError):
            call()
        assert sent_requests == before, name

    assert not target.parent.exists()


@pytest.mark.parametrize("bad_bucket", INVALID_BUCKETS)
def test_invalid_bucket_rejected_before_any_request(store, sent_requests, bad_bucket):
    before = list(sent_requests)

    with pytest.raises(StorageError, match="invalid bucket name"):
        store.put_object(bad_bucket, "input/a.csv", b"x")
    with pytest.raises(StorageError, match="invalid bucket name"):
        list(store.list_objects(bad_bucket, "input/"))

    assert sent_requests == before


def test_list_rejects_invalid_prefix(store, bucket, sent_requests):
    before = list(sent_requests)

    with pytest.raises(InvalidKeyError):
        list(store.list_objects(bucket, "../"))

    assert sent_requests == before


# -- listing ------------------------------------------------------------------------------------


def test_list_with_prefix(store, bucket):
    for key in ["input/a.csv", "input/b/c.csv", "inputs/d.csv", "other/e.csv"]:
        store.put_object(bucket, key, b"x")

    assert keys_of(store.list_objects(bucket, "input/")) == ["input/a.csv", "input/b/c.csv"]
    assert keys_of(store.list_objects(bucket, "input/b/")) == ["input/b/c.csv"]
    assert keys_of(store.list_objects(bucket, "input")) == [
        "input/a.csv",
        "input/b/c.csv",
        "inputs/d.csv",
    ]
    assert keys_of(store.list_objects(bucket, "missing/")) == []


def test_list_in_utf8_byte_order(store, bucket):
    keys = ["input/é.csv", "input/z.csv", "input/a/b.csv", "input/a-c.csv", "input/B.csv"]
    for key in keys:
        store.put_object(bucket, key, b"x")

    listed = keys_of(store.list_objects(bucket, "input/"))

    assert listed == ["input/B.csv", "input/a-c.csv", "input/a/b.csv", "input/z.csv", "input/é.csv"]


def test_list_beyond_one_page(store, bucket):
    keys = [f"input/part-{index:02d}.csv" for index in range(PAGE_SIZE * 3 + 1)]
    for key in reversed(keys):
        store.put_object(bucket, key, key.encode())
    store.put_object(bucket, "other/outside.csv", b"x")

    assert keys_of(store.list_objects(bucket, "input/")) == keys
    assert keys_of(store.list_objects(bucket)) == [*keys, "other/outside.csv"]


def test_list_matches_head(store, bucket):
    store.put_object(bucket, "input/a.csv", b"hello")
    store.put_object(bucket, "input/b.csv", b"hello, world")

    for info in store.list_objects(bucket, "input/"):
        head = store.head_object(bucket, info.key)
        assert info.bucket == bucket
        assert info.size == head.size
        assert info.etag == head.etag
        assert info.last_modified.utcoffset() == timedelta(0)


# -- files --------------------------------------------------------------------------------------


def test_upload_and_download_file(store, bucket, tmp_path):
    source = tmp_path / "source.csv"
    source.write_bytes(b"a,b\n1,2\n")

    info = store.upload_file(bucket, "input/up.csv", source)
    target = tmp_path / "out" / "nested" / "down.csv"
    store.download_file(bucket, "input/up.csv", target)

    assert info.key == "input/up.csv"
    assert info.size == 8
    assert plain(info.etag) == md5_hex(b"a,b\n1,2\n")
    assert target.read_bytes() == b"a,b\n1,2\n"


def test_upload_file_of_several_parts(store, bucket, tmp_path):
    body = os.urandom(PART_SIZE + 4096)
    source = tmp_path / "big.bin"
    source.write_bytes(body)

    info = store.upload_file(bucket, "input/big.bin", source)
    target = tmp_path / "big-copy.bin"
    store.download_file(bucket, "input/big.bin", target)

    assert info.size == len(body)
    assert store.head_object(bucket, "input/big.bin").etag == info.etag
    assert target.read_bytes() == body
    assert store.get_object(bucket, "input/big.bin") == body


def test_upload_missing_file_raises(store, bucket, tmp_path):
    with pytest.raises(StorageError, match="file not found"):
        store.upload_file(bucket, "input/up.csv", tmp_path / "absent.csv")


def test_download_overwrites_existing_file(store, bucket, tmp_path):
    store.put_object(bucket, "input/a.csv", b"new content")
    target = tmp_path / "a.csv"
    target.write_bytes(b"old content that is longer")

    store.download_file(bucket, "input/a.csv", target)

    assert target.read_bytes() == b"new content"


# -- manifests ----------------------------------------------------------------------------------


def test_manifest_round_trip(store, bucket):
    prefix_uri = f"s3://{bucket}/input/"
    keys = ["sales report Q1.csv", "c++ export (1).csv", "2024/café.csv"]

    store.put_manifest(bucket, "manifests/job-1.json", prefix_uri, keys)

    assert store.read_manifest(bucket, "manifests/job-1.json") == (prefix_uri, keys)


def test_manifest_is_sagemaker_format(store, bucket):
    prefix_uri = f"s3://{bucket}/input/"

    info = store.put_manifest(bucket, "manifests/job-1.json", prefix_uri, ["a b.csv"])
    entries = json.loads(store.get_object(bucket, "manifests/job-1.json"))

    assert entries == [{"prefix": prefix_uri}, "a b.csv"]
    assert store.head_object(bucket, "manifests/job-1.json").etag == info.etag


def test_read_malformed_manifest_raises(store, bucket):
    store.put_object(bucket, "manifests/bad.json", b'{"prefix": "not a list"}')

    with pytest.raises(StorageError, match=f"s3://{bucket}/manifests/bad.json"):
        store.read_manifest(bucket, "manifests/bad.json")


def test_read_missing_manifest_raises_not_found(store, bucket):
    store.put_object(bucket, "manifests/other.json", b"[]")

    with pytest.raises(ObjectNotFoundError):
        store.read_manifest(bucket, "manifests/job-1.json")
