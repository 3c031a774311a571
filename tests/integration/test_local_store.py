"""The local folder store against real files: S3 semantics, atomic writes and notifications."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prepflow.errors import InvalidKeyError, ObjectNotFoundError, StorageError
from prepflow.events import ObjectCreated, parse_trigger_event
from prepflow.storage.local import LocalObjectStore

BUCKET = "acme-ml-raw"
OTHER = "acme-ml-processed"
ARTIFACTS = "acme-ml-artifacts"


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "home", region="eu-west-1")


def bucket_dir(store: LocalObjectStore, bucket: str = BUCKET) -> Path:
    return store.home / "buckets" / bucket


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def sequencer_value(sequencer: str | None) -> int:
    assert sequencer is not None
    return int(sequencer, 16)


# -- put, get, head -----------------------------------------------------------------------------


def test_put_then_get(store):
    store.put_object(BUCKET, "input/a.csv", b"id,value\n1,2\n")

    assert store.get_object(BUCKET, "input/a.csv") == b"id,value\n1,2\n"


def test_put_returns_info(store):
    info = store.put_object(BUCKET, "input/a.csv", b"hello")

    assert info.bucket == BUCKET
    assert info.key == "input/a.csv"
    assert info.size == 5
    assert info.uri == "s3://acme-ml-raw/input/a.csv"
    assert info.last_modified.tzinfo is UTC


def test_put_writes_file_at_key(store):
    store.put_object(BUCKET, "input/2024/a.csv", b"hello")

    assert (bucket_dir(store) / "input" / "2024" / "a.csv").read_bytes() == b"hello"


def test_etag_is_md5(store):
    body = os.urandom(70_000)

    info = store.put_object(BUCKET, "input/a.bin", body)

    assert info.etag == hashlib.md5(body).hexdigest()


def test_head_matches_put(store):
    put = store.put_object(BUCKET, "input/a.csv", b"hello")

    head = store.head_object(BUCKET, "input/a.csv")

    assert (head.size, head.etag, head.sequencer) == (5, put.etag, put.sequencer)


def test_empty_object(store):
    info = store.put_object(BUCKET, "input/empty.csv", b"")

    assert info.size == 0
    assert info.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert store.get_object(BUCKET, "input/empty.csv") == b""


def test_overwrite_replaces_content(store):
    store.put_object(BUCKET, "input/a.csv", b"first version")
    store.put_object(BUCKET, "input/a.csv", b"second")

    assert store.get_object(BUCKET, "input/a.csv") == b"second"
    assert store.head_object(BUCKET, "input/a.csv").size == 6


def test_get_missing_raises_not_found(store):
    with pytest.raises(ObjectNotFoundError) as caught:
        store.get_object(BUCKET, "input/missing.csv")

    assert caught.value.bucket == BUCKET
    assert caught.value.key == "input/missing.csv"
    assert "s3://acme-ml-raw/input/missing.csv" in str(caught.value)


def test_head_missing_raises_not_found(store):
    with pytest.raises(ObjectNotFoundError):
        store.head_object(BUCKET, "input/missing.csv")


def test_head_of_folder_raises_not_found(store):
    store.put_object(BUCKET, "input/2024/a.csv", b"x")

    with pytest.raises(ObjectNotFoundError):
        store.head_object(BUCKET, "input/2024")


def test_get_of_folder_raises_not_found(store):
    store.put_object(BUCKET, "input/2024/a.csv", b"x")

    with pytest.raises(ObjectNotFoundError):
        store.get_object(BUCKET, "input/2024")


def test_upload_and_download_file(store, tmp_path):
    source = tmp_path / "source.csv"
    source.write_bytes(b"a,b\n1,2\n")

    info = store.upload_file(BUCKET, "input/up.csv", source)
    target = tmp_path / "out" / "nested" / "down.csv"
    store.download_file(BUCKET, "input/up.csv", target)

    assert info.etag == hashlib.md5(b"a,b\n1,2\n").hexdigest()
    assert target.read_bytes() == b"a,b\n1,2\n"


def test_upload_missing_file_raises(store, tmp_path):
    with pytest.raises(StorageError, match="file not found"):
        store.upload_file(BUCKET, "input/up.csv", tmp_path / "absent.csv")


def test_download_missing_raises_not_found(store, tmp_path):
    with pytest.raises(ObjectNotFoundError):
        store.download_file(BUCKET, "input/absent.csv", tmp_path / "x.csv")


@pytest.mark.parametrize("bucket", ["Upper", "ab", "-leading", "has_underscore", "a" * 64, "a..b"])
def test_invalid_bucket_name(store, bucket):
    with pytest.raises(StorageError, match="invalid bucket name"):
        store.put_object(bucket, "k", b"x")


def test_key_under_existing_object_rejected(store):
    store.put_object(BUCKET, "input/a", b"x")

    with pytest.raises(StorageError, match="already"):
        store.put_object(BUCKET, "input/a/b.csv", b"y")


def test_object_over_existing_folder_rejected(store):
    store.put_object(BUCKET, "input/a/b.csv", b"y")

    with pytest.raises(StorageError, match="folder of that name exists"):
        store.put_object(BUCKET, "input/a", b"x")


# -- sequencers ---------------------------------------------------------------------------------


def test_sequencer_increases_per_put(store):
    sequencers = [store.put_object(BUCKET, f"input/{i}.csv", b"x").sequencer for i in range(6)]

    values = [sequencer_value(s) for s in sequencers]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_sequencer_string_order_is_numeric_order(store):
    sequencers = [store.put_object(BUCKET, "input/a.csv", b"x").sequencer for _ in range(20)]

    assert sequencers == sorted(sequencers)
    assert len(set(sequencers)) == 20


def test_sequencer_increases_on_overwrite(store):
    first = store.put_object(BUCKET, "input/a.csv", b"x")
    second = store.put_object(BUCKET, "input/a.csv", b"x")

    assert sequencer_value(second.sequencer) > sequencer_value(first.sequencer)


def test_sequencer_independent_across_buckets(store):
    raw_first = store.put_object(BUCKET, "input/a.csv", b"x")
    for index in range(5):
        store.put_object(OTHER, f"output/{index}.csv", b"x")
    other_first = store.head_object(OTHER, "output/0.csv")
    raw_second = store.put_object(BUCKET, "input/b.csv", b"x")

    assert other_first.sequencer == raw_first.sequencer
    assert sequencer_value(raw_second.sequencer) == sequencer_value(raw_first.sequencer) + 1


def test_sequencer_survives_reopen(store):
    first = store.put_object(BUCKET, "input/a.csv", b"x")
    reopened = LocalObjectStore(store.home, region="eu-west-1")

    second = reopened.put_object(BUCKET, "input/b.csv", b"x")

    assert sequencer_value(second.sequencer) > sequencer_value(first.sequencer)
    assert reopened.head_object(BUCKET, "input/a.csv").sequencer == first.sequencer


# -- atomic writes ------------------------------------------------------------------------------


def test_no_temporary_file_in_bucket(store):
    for index in range(5):
        store.put_object(BUCKET, f"input/{index}.csv", os.urandom(1000))

    assert files_under(bucket_dir(store)) == [f"input/{i}.csv" for i in range(5)]


def test_failed_write_leaves_no_file(store):
    with pytest.raises(TypeError):
        store.put_object(BUCKET, "input/a.csv", "text, not bytes")  # type: ignore[arg-type]

    assert files_under(bucket_dir(store)) == []
    assert files_under(store.home / "tmp") == []


def test_failed_overwrite_keeps_old_object(store):
    store.put_object(BUCKET, "input/a.csv", b"original")

    with pytest.raises(TypeError):
        store.put_object(BUCKET, "input/a.csv", "text, not bytes")  # type: ignore[arg-type]

    assert store.get_object(BUCKET, "input/a.csv") == b"original"


def test_reader_never_sees_partial_object(store):
    size = 4 * 1024 * 1024
    versions = [bytes([65 + index]) * size for index in range(3)]
    store.put_object(BUCKET, "input/big.bin", versions[0])
    done = threading.Event()
    bad_reads: list[int] = []
    read_count = 0

    def read_repeatedly() -> None:
        nonlocal read_count
        while not done.is_set():
            body = store.get_object(BUCKET, "input/big.bin")
            read_count += 1
            if body not in versions:
                bad_reads.append(len(body))

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        for round_number in range(15):
            store.put_object(BUCKET, "input/big.bin", versions[round_number % 3])
    finally:
        done.set()
        reader.join(timeout=30)

    assert bad_reads == []
    assert read_count > 0


def test_writer_shows_no_temporary_name(store):
    store.put_object(BUCKET, "input/big.bin", b"0" * 1024)
    folder = bucket_dir(store) / "input"
    done = threading.Event()
    seen: set[str] = set()

    def list_repeatedly() -> None:
        while not done.is_set():
            seen.update(os.listdir(folder))

    watcher = threading.Thread(target=list_repeatedly)
    watcher.start()
    try:
        for index in range(15):
            store.put_object(BUCKET, "input/big.bin", bytes([index]) * (2 * 1024 * 1024))
    finally:
        done.set()
        watcher.join(timeout=30)

    assert seen == {"big.bin"}


# -- keys ---------------------------------------------------------------------------------------

ODD_KEYS = [
    "input/sales report Q1.csv",
    "input/c++ export (1).csv",
    "input/100% done.csv",
    "input/%2B literal.csv",
    "input/café münchen.csv",
    "input/日本語のファイル.csv",
    "input/emoji 📊.csv",
    "input/2024-06-04T10:15:00+02:00.csv",
    "input/quotes 'a' \"b\".csv",
    "input/back\\slash.csv",
    "input/.hidden",
    "input/ leading and trailing .csv",
    "input/" + "é" * 125 + ".csv",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_key_round_trip(store, key):
    store.put_object(BUCKET, key, key.encode())

    assert store.get_object(BUCKET, key) == key.encode()
    assert store.head_object(BUCKET, key).key == key


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_key_listed(store, key):
    store.put_object(BUCKET, key, b"x")

    assert [info.key for info in store.list_objects(BUCKET)] == [key]


REJECTED_KEYS = [
    "../x",
    "a/../b",
    "input/..",
    "./a",
    "/abs",
    "a//b",
    "a\0b",
    "",
    "x" * 1025,
    "input/" + "x" * 256,
    "input/" + "é" * 128,
]


@pytest.mark.parametrize("key", REJECTED_KEYS)
def test_put_rejects_key(store, key):
    with pytest.raises(InvalidKeyError):
        store.put_object(BUCKET, key, b"x")

    assert files_under(store.home / "buckets") == []


@pytest.mark.parametrize("key", REJECTED_KEYS)
def test_get_rejects_key(store, key):
    with pytest.raises(InvalidKeyError):
        store.get_object(BUCKET, key)


def test_put_rejects_key_escaping_to_sibling_bucket(store):
    with pytest.raises(InvalidKeyError):
        store.put_object(BUCKET, "../acme-ml-processed/x.csv", b"x")

    assert not (store.home / "buckets" / OTHER).exists()


def test_longest_segment_accepted(store):
    key = "input/" + "x" * 255

    store.put_object(BUCKET, key, b"x")

    assert store.get_object(BUCKET, key) == b"x"


def test_put_rejects_lone_surrogate_key(store):
    with pytest.raises(InvalidKeyError):
        store.put_object(BUCKET, "input/bad\udcff.csv", b"x")


# -- symbolic links -----------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.csv").write_bytes(b"not for the pipeline")
    return folder


def test_symlinked_file_not_read(store, outside):
    bucket_dir(store).mkdir(parents=True)
    (bucket_dir(store) / "link.csv").symlink_to(outside / "secret.csv")

    with pytest.raises(InvalidKeyError):
        store.get_object(BUCKET, "link.csv")


def test_symlinked_file_not_written(store, outside):
    bucket_dir(store).mkdir(parents=True)
    (bucket_dir(store) / "link.csv").symlink_to(outside / "secret.csv")

    with pytest.raises(InvalidKeyError):
        store.put_object(BUCKET, "link.csv", b"overwritten")

    assert (outside / "secret.csv").read_bytes() == b"not for the pipeline"


def test_symlinked_folder_not_read(store, outside):
    bucket_dir(store).mkdir(parents=True)
    (bucket_dir(store) / "linked").symlink_to(outside)

    with pytest.raises(InvalidKeyError):
        store.get_object(BUCKET, "linked/secret.csv")


def test_symlinked_folder_not_written(store, outside):
    bucket_dir(store).mkdir(parents=True)
    (bucket_dir(store) / "linked").symlink_to(outside)

    with pytest.raises(InvalidKeyError):
        store.put_object(BUCKET, "linked/new.csv", b"x")

    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv"]


def test_symlinked_folder_no_folder_created_outside(store, outside):
    bucket_dir(store).mkdir(parents=True)
    (bucket_dir(store) / "linked").symlink_to(outside)

    with pytest.raises(InvalidKeyError):
        store.put_object(BUCKET, "linked/sub/new.csv", b"x")

    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv"]


def test_symlinks_not_listed(store, outside):
    store.put_object(BUCKET, "input/real.csv", b"x")
    (bucket_dir(store) / "input" / "link.csv").symlink_to(outside / "secret.csv")
    (bucket_dir(store) / "input" / "linked").symlink_to(outside)

    assert [info.key for info in store.list_objects(BUCKET)] == ["input/real.csv"]


def test_symlink_not_read_by_head(store, outside):
    bucket_dir(store).mkdir(parents=True)
    (bucket_dir(store) / "link.csv").symlink_to(outside / "secret.csv")

    with pytest.raises(InvalidKeyError):
        store.head_object(BUCKET, "link.csv")


# -- listing ------------------------------------------------------------------------------------


def test_list_in_key_order(store):
    for key in ["input/c.csv", "input/a.csv", "input/b/z.csv", "input/b/a.csv", "other/x.csv"]:
        store.put_object(BUCKET, key, b"x")

    keys = [info.key for info in store.list_objects(BUCKET)]

    assert keys == ["input/a.csv", "input/b/a.csv", "input/b/z.csv", "input/c.csv", "other/x.csv"]


def test_list_in_s3_byte_order(store):
    for key in ["data/a/b.csv", "data/a-c.csv", "data/a.csv", "data/a/x.csv"]:
        store.put_object(BUCKET, key, b"x")

    keys = [info.key for info in store.list_objects(BUCKET)]

    assert keys == ["data/a-c.csv", "data/a.csv", "data/a/b.csv", "data/a/x.csv"]


def test_list_with_folder_prefix(store):
    for key in ["input/a.csv", "input/sub/b.csv", "inputs/c.csv", "other/d.csv"]:
        store.put_object(BUCKET, key, b"x")

    keys = [info.key for info in store.list_objects(BUCKET, "input/")]

    assert keys == ["input/a.csv", "input/sub/b.csv"]


def test_list_with_partial_prefix(store):
    for key in ["input/report-1.csv", "input/report-2.csv", "input/summary.csv", "input2.csv"]:
        store.put_object(BUCKET, key, b"x")

    keys = [info.key for info in store.list_objects(BUCKET, "input/rep")]

    assert keys == ["input/report-1.csv", "input/report-2.csv"]


def test_list_prefix_matching_nothing(store):
    store.put_object(BUCKET, "input/a.csv", b"x")

    assert list(store.list_objects(BUCKET, "missing/")) == []


def test_list_empty_bucket(store):
    assert list(store.list_objects(BUCKET)) == []


def test_list_rejects_escaping_prefix(store):
    with pytest.raises(InvalidKeyError):
        list(store.list_objects(BUCKET, "../"))


def test_list_returns_metadata(store):
    put = store.put_object(BUCKET, "input/a.csv", b"hello")

    (listed,) = store.list_objects(BUCKET)

    assert (listed.size, listed.etag, listed.sequencer) == (5, put.etag, put.sequencer)


# -- files written by other programs ------------------------------------------------------------


def copy_in(store: LocalObjectStore, key: str, body: bytes) -> Path:
    path = bucket_dir(store) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def test_copied_file_listed_with_fresh_sequencer(store):
    last_put = store.put_object(BUCKET, "input/a.csv", b"x")
    copy_in(store, "input/copied.csv", b"copied,by\nanother,program\n")

    listed = {info.key: info for info in store.list_objects(BUCKET)}

    copied = listed["input/copied.csv"]
    assert sequencer_value(copied.sequencer) > sequencer_value(last_put.sequencer)
    assert copied.etag == hashlib.md5(b"copied,by\nanother,program\n").hexdigest()
    assert copied.size == len(b"copied,by\nanother,program\n")


def test_copied_file_keeps_sequencer(store):
    copy_in(store, "input/copied.csv", b"data")

    first = store.head_object(BUCKET, "input/copied.csv")
    (listed,) = store.list_objects(BUCKET)
    again = store.head_object(BUCKET, "input/copied.csv")

    assert first.sequencer == listed.sequencer == again.sequencer


def test_copied_file_with_shutil_copy2(store, tmp_path):
    source = tmp_path / "export.csv"
    source.write_bytes(b"a,b\n")
    bucket_dir(store).joinpath("input").mkdir(parents=True)
    shutil.copy2(source, bucket_dir(store) / "input" / "export.csv")

    info = store.head_object(BUCKET, "input/export.csv")

    assert info.sequencer is not None
    assert info.etag == hashlib.md5(b"a,b\n").hexdigest()


def test_changed_file_gets_larger_sequencer(store):
    path = copy_in(store, "input/copied.csv", b"version one")
    before = store.head_object(BUCKET, "input/copied.csv")

    path.write_bytes(b"version two, longer")
    after = store.head_object(BUCKET, "input/copied.csv")

    assert sequencer_value(after.sequencer) > sequencer_value(before.sequencer)
    assert after.etag == hashlib.md5(b"version two, longer").hexdigest()


def test_changed_file_same_size_new_sequencer(store):
    path = copy_in(store, "input/copied.csv", b"aaaa")
    before = store.head_object(BUCKET, "input/copied.csv")
    stat = path.stat()

    path.write_bytes(b"bbbb")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = store.head_object(BUCKET, "input/copied.csv")

    assert sequencer_value(after.sequencer) > sequencer_value(before.sequencer)
    assert after.etag == hashlib.md5(b"bbbb").hexdigest()


def test_put_object_not_rerecorded_by_list(store):
    put = store.put_object(BUCKET, "input/a.csv", b"x")

    (listed,) = store.list_objects(BUCKET)

    assert listed.sequencer == put.sequencer


def test_scan_records_nothing(store):
    copy_in(store, "input/copied.csv", b"data")

    scanned = [key for key, _path, _stat in store.scan(BUCKET)]
    first_head = store.head_object(BUCKET, "input/copied.csv")

    assert scanned == ["input/copied.csv"]
    assert sequencer_value(first_head.sequencer) == 1


def test_list_skips_non_utf8_file_name(store):
    store.put_object(BUCKET, "input/good.csv", b"x")
    folder = os.fsencode(bucket_dir(store) / "input")
    with open(folder + b"/bad\xff.csv", "wb") as handle:
        handle.write(b"y")

    keys = [info.key for info in store.list_objects(BUCKET)]

    assert keys == ["input/good.csv"]


# -- notifications ------------------------------------------------------------------------------


def test_subscriber_gets_notification(store):
    received: list[dict] = []
    store.subscribe(BUCKET, received.append)

    info = store.put_object(BUCKET, "input/a.csv", b"hello")

    (notification,) = received
    (record,) = notification["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["awsRegion"] == "eu-west-1"
    assert record["s3"]["bucket"]["name"] == BUCKET
    assert record["s3"]["object"] == {
        "key": "input/a.csv",
        "size": 5,
        "eTag": info.etag,
        "sequencer": info.sequencer,
    }


def test_subscriber_key_encoded_as_s3_does(store):
    received: list[dict] = []
    store.subscribe(BUCKET, received.append)

    store.put_object(BUCKET, "input/c++ export (1) ü.csv", b"x")

    encoded = received[0]["Records"][0]["s3"]["object"]["key"]
    assert encoded == "input/c%2B%2B+export+%281%29+%C3%BC.csv"


@pytest.mark.parametrize("key", ODD_KEYS)
def test_subscriber_notification_parses_to_key(store, key):
    received: list[dict] = []
    store.subscribe(BUCKET, received.append)

    info = store.put_object(BUCKET, key, b"x")

    (message,) = parse_trigger_event(json.dumps(received[0]))
    (created,) = message.notifications
    assert isinstance(created, ObjectCreated)
    assert created.key == key
    assert created.sequencer == info.sequencer
    assert created.etag == info.etag


def test_subscriber_only_for_its_bucket(store):
    raw_events: list[dict] = []
    other_events: list[dict] = []
    store.subscribe(BUCKET, raw_events.append)
    store.subscribe(OTHER, other_events.append)

    store.put_object(BUCKET, "input/a.csv", b"x")
    store.put_object(OTHER, "output/b.csv", b"y")
    store.put_object(OTHER, "output/c.csv", b"z")

    assert [e["Records"][0]["s3"]["object"]["key"] for e in raw_events] == ["input/a.csv"]
    assert [e["Records"][0]["s3"]["object"]["key"] for e in other_events] == [
        "output/b.csv",
        "output/c.csv",
    ]


def test_every_subscriber_of_bucket_called(store):
    first: list[dict] = []
    second: list[dict] = []
    store.subscribe(BUCKET, first.append)
    store.subscribe(BUCKET, second.append)

    store.put_object(BUCKET, "input/a.csv", b"x")

    assert len(first) == 1
    assert first == second


def test_subscriber_sees_stored_object(store):
    contents: list[bytes] = []

    def read_back(notification: dict) -> None:
        (message,) = parse_trigger_event(notification)
        created = message.notifications[0]
        contents.append(store.get_object(created.bucket, created.key))

    store.subscribe(BUCKET, read_back)
    store.put_object(BUCKET, "input/sales report.csv", b"complete body")

    assert contents == [b"complete body"]


def test_upload_file_notifies(store, tmp_path):
    received: list[dict] = []
    store.subscribe(BUCKET, received.append)
    source = tmp_path / "a.csv"
    source.write_bytes(b"x")

    store.upload_file(BUCKET, "input/a b.csv", source)

    assert received[0]["Records"][0]["s3"]["object"]["key"] == "input/a+b.csv"


def test_notification_event_time_is_object_time(store):
    received: list[dict] = []
    store.subscribe(BUCKET, received.append)

    info = store.put_object(BUCKET, "input/a.csv", b"x")

    event_time = received[0]["Records"][0]["eventTime"]
    parsed = datetime.strptime(event_time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((parsed - info.last_modified).total_seconds()) < 0.001


def test_rejected_key_sends_no_notification(store):
    received: list[dict] = []
    store.subscribe(BUCKET, received.append)

    with pytest.raises(InvalidKeyError):
        store.put_object(BUCKET, "../x.csv", b"x")

    assert received == []


# -- folder placeholders ------------------------------------------------------------------------


def test_folder_placeholder_creates_folder(store):
    info = store.put_object(BUCKET, "input/2024-06/", b"")

    assert info.size == 0
    assert info.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert (bucket_dir(store) / "input" / "2024-06").is_dir()


def test_folder_placeholder_then_object_inside(store):
    store.put_object(BUCKET, "input/2024-06/", b"")

    store.put_object(BUCKET, "input/2024-06/a.csv", b"x")

    assert store.get_object(BUCKET, "input/2024-06/a.csv") == b"x"


def test_folder_placeholder_notifies(store):
    received: list[dict] = []
    store.subscribe(BUCKET, received.append)

    store.put_object(BUCKET, "input/2024-06/", b"")

    assert [e["Records"][0]["s3"]["object"]["key"] for e in received] == ["input/2024-06/"]


# -- manifests ----------------------------------------------------------------------------------


def test_manifest_round_trip(store):
    keys = ["a.csv", "sub/b c.csv", "ü+%.csv"]

    store.put_manifest(ARTIFACTS, "manifests/job.manifest", "s3://acme-ml-raw/input/", keys)

    prefix, read_keys = store.read_manifest(ARTIFACTS, "manifests/job.manifest")
    assert prefix == "s3://acme-ml-raw/input/"
    assert read_keys == keys


def test_manifest_is_sagemaker_format(store):
    store.put_manifest(ARTIFACTS, "manifests/job.manifest", "s3://acme-ml-raw/input/", ["a.csv"])

    body = json.loads(store.get_object(ARTIFACTS, "manifests/job.manifest"))

    assert body == [{"prefix": "s3://acme-ml-raw/input/"}, "a.csv"]


def test_manifest_malformed_raises(store):
    store.put_object(ARTIFACTS, "manifests/bad.manifest", b'{"prefix": "x"}')

    with pytest.raises(StorageError) as caught:
        store.read_manifest(ARTIFACTS, "manifests/bad.manifest")

    assert "s3://acme-ml-artifacts/manifests/bad.manifest" in str(caught.value)


def test_manifest_missing_raises_not_found(store):
    with pytest.raises(ObjectNotFoundError):
        store.read_manifest(ARTIFACTS, "manifests/absent.manifest")


# -- several store instances on one home --------------------------------------------------------


def test_two_instances_share_sequencers(store):
    other = LocalObjectStore(store.home, region="eu-west-1")
    values: list[int] = []

    def put_many(target: LocalObjectStore, name: str) -> None:
        for index in range(25):
            info = target.put_object(BUCKET, f"input/{name}-{index}.csv", b"x")
            values.append(sequencer_value(info.sequencer))

    threads = [
        threading.Thread(target=put_many, args=(store, "first")),
        threading.Thread(target=put_many, args=(other, "second")),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert time.monotonic() - started < 60
    assert sorted(values) == list(range(1, 51))


def test_object_mode_follows_umask(store):
    previous = os.umask(0o027)
    try:
        store.put_object(BUCKET, "input/mode.csv", b"a\n")
    finally:
        os.umask(previous)

    mode = (bucket_dir(store) / "input" / "mode.csv").stat().st_mode & 0o777

    assert mode == 0o640
