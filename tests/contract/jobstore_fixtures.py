"""Fixtures of the job store contract tests: each test runs on SQLite and on DynamoDB (moto).

Nothing here reaches AWS: credentials are fake, the shared config and credentials files are
hidden, and the DynamoDB client is made inside moto's in-process ``mock_aws``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from prepflow.aws.dynamodb import DynamoJobStore, table_definition
from prepflow.jobstore.base import JobStore
from prepflow.jobstore.sqlite import SqliteJobStore

REGION = "eu-west-1"
TABLE_NAME = "prepflow-contract-jobs"


@pytest.fixture(autouse=True)
def fake_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """Give boto3 fake credentials and no shared files, so no test can use a real account."""
    empty = tmp_path_factory.mktemp("aws-config") / "none"
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(params=["sqlite", "dynamodb"])
def jobs(
    request: pytest.FixtureRequest, tmp_path: Path, fake_aws_environment
) -> Iterator[JobStore]:
    """An empty job store: a SQLite file, or a DynamoDB table made with ``table_definition``."""
    if request.param == "sqlite":
        yield SqliteJobStore(tmp_path / "jobs.db")
        return
    with mock_aws():
        client = _boto3_session().client("dynamodb")
        client.create_table(**table_definition(TABLE_NAME))
        yield DynamoJobStore(client, TABLE_NAME)


@functools.cache
def _boto3_session() -> boto3.session.Session:
    """Return one boto3 session for every test: it loads the DynamoDB model once, not per test.

    The ``jobs`` fixture makes it first, after ``fake_aws_environment``, so the session reads
    the fake credentials and no shared config file.
    """
    return boto3.session.Session(region_name=REGION)
