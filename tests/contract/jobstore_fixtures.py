"""Fixtures of the job store contract tests: each test runs on SQLite and on DynamoDB (moto).

Nothing here reaches AWS: the credentials are fake (``fake_aws_credentials`` of
tests/aws/conftest.py, used by every contract test), and the DynamoDB client is made inside
moto's in-process ``mock_aws``.
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
from tests.aws.conftest import REGION

TABLE_NAME = "prepflow-contract-jobs"


@pytest.fixture(params=["sqlite", "dynamodb"])
def jobs(
    request: pytest.FixtureRequest, tmp_path: Path, fake_aws_credentials
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

    The ``jobs`` fixture makes it first, after ``fake_aws_credentials``, so the session reads
    the fake credentials and no shared config file.
    """
    return boto3.session.Session(region_name=REGION)
