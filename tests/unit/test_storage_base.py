"""The object store port's pure helpers: key rules, S3 URIs and SageMaker manifests."""

from __future__ import annotations

import json

import pytest

from prepflow.errors import InvalidKeyError, StorageError
from prepflow.storage.base import (
    check_key,
    folder_prefix,
    parse_manifest,
    parse_s3_uri,
    relative_key,
    s3_uri,
)


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "input/sales report Q1.csv",
        "input/c++ (1).csv",
        "input/100%.csv",
        "input/日本語.csv",
        "input/2024-06/",
        "input/.hidden",
        "input/..dots",
        "input/a..b",
        "x" * 1024,
    ],
)
def test_check_key_accepts(key):
    check_key(key)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "empty"),
        ("../x", "'..'"),
        ("a/../b", "'..'"),
        ("a/..", "'..'"),
        ("./a", "'.'"),
        ("a/./b", "'.'"),
        ("a//b", "empty"),
        ("a//", "empty"),
        ("/abs", "starts with '/'"),
        ("a\0b", "NUL"),
        ("x" * 1025, "longer than 1024 bytes"),
        ("é" * 513, "longer than 1024 bytes"),
    ],
)
def test_check_key_rejects(key, fragment):
    with pytest.raises(InvalidKeyError, match=fragment):
        check_key(key)


def test_check_key_rejects_lone_surrogate():
    with pytest.raises(InvalidKeyError):
        check_key("input/bad\udcff.csv")


def test_invalid_key_is_storage_error():
    with pytest.raises(StorageError):
        check_key("../x")


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [
        ("s3://acme-ml-raw/input/a.csv", "acme-ml-raw", "input/a.csv"),
        ("s3://acme-ml-raw/input/", "acme-ml-raw", "input/"),
        ("s3://acme-ml-raw/", "acme-ml-raw", ""),
        ("s3://acme-ml-raw", "acme-ml-raw", ""),
        ("s3://b/a b+c%.csv", "b", "a b+c%.csv"),
    ],
)
def test_parse_s3_uri(uri, bucket, key):
    assert parse_s3_uri(uri) == (bucket, key)


@pytest.mark.parametrize("uri", ["https://b/k", "/local/path", "s3:/b/k", "s3:///key"])
def test_parse_s3_uri_rejects(uri):
    with pytest.raises(StorageError):
        parse_s3_uri(uri)


def test_s3_uri_round_trip():
    assert parse_s3_uri(s3_uri("acme-ml-raw", "input/a b.csv")) == ("acme-ml-raw", "input/a b.csv")


@pytest.mark.parametrize(
    ("key", "expected"),
    [("input/a.csv", "input/"), ("a.csv", ""), ("input/2024/06/a.csv", "input/2024/06/")],
)
def test_folder_prefix(key, expected):
    assert folder_prefix(key) == expected


def test_relative_key():
    assert relative_key("input/2024/a.csv", "input/") == "2024/a.csv"


def test_relative_key_empty_prefix():
    assert relative_key("input/a.csv", "") == "input/a.csv"


def test_relative_key_outside_prefix():
    with pytest.raises(StorageError, match="not under prefix"):
        relative_key("other/a.csv", "input/")


def test_parse_manifest():
    body = json.dumps([{"prefix": "s3://acme-ml-raw/input/"}, "a.csv", "sub/b c.csv"]).encode()

    assert parse_manifest(body, source="m") == ("s3://acme-ml-raw/input/", ["a.csv", "sub/b c.csv"])


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'[{"no_prefix": "s3://b/"}]',
        b'[{"prefix": "/local/"}]',
        b'["a.csv"]',
    ],
)
def test_parse_manifest_rejects_malformed(body):
    with pytest.raises(StorageError) as caught:
        parse_manifest(body, source="s3://b/m.manifest")

    assert "s3://b/m.manifest is not a SageMaker manifest" in str(caught.value)


def test_parse_manifest_rejects_non_string_entry():
    body = json.dumps([{"prefix": "s3://b/input/"}, "a.csv", 3]).encode()

    with pytest.raises(StorageError, match="every entry after the prefix"):
        parse_manifest(body, source="s3://b/m.manifest")
