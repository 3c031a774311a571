"""The job store on one DynamoDB table, shared by the Lambda functions and the CLI.

Table design (``table_definition`` returns it, and infrastructure code must create the same):

- Partition key ``pk`` (string), no sort key, on-demand billing.
- One job item per record: ``pk = "job#<job_name>"``, the record's JSON in ``body``, and
  ``job_name``, ``idempotency_key``, ``status``, ``version`` (number), ``write_id``,
  ``kind = "job"`` and ``created_at`` (UTC, fixed-width ISO 8601, so string order is time
  order) for conditions and the index.
- One idempotency item per key: ``pk = "key#<idempotency_key>"`` with the ``job_name`` that
  owns the key. It has no ``kind``, so the index leaves it out. A batch job has one more such
  item per object it claims, keyed by the object's idempotency key.
- Global secondary index ``jobs-by-created-at``: partition key ``kind``, sort key
  ``created_at``, all attributes projected, for listing newest first.

The job item, its idempotency item and its claim items are written together in one
transaction, each put only if absent. So a key never points to a missing job, a job name never
gets a second key, and an object is claimed by one job at most.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from prepflow.errors import JobStoreError, JobTableNotFoundError
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord, JobStore

logger = logging.getLogger(__name__)

INDEX_NAME = "jobs-by-created-at"
JOB_KIND = "job"
# Items read per Query page when listing; a status filter is applied after the read, so a
# rare status may take several pages.
QUERY_PAGE_SIZE = 100
# DynamoDB's maximum item size (400 KB, counting attribute names and values) and partition
# key length, from the DynamoDB Developer Guide pages "Constraints in Amazon DynamoDB" and
# "DynamoDB item sizes and formats".
MAX_ITEM_BYTES = 400 * 1024
MAX_PARTITION_KEY_BYTES = 2048
# A transaction cancelled with TransactionConflict (another transaction was writing one of
# its items) is retried this many times in all; botocore does not retry it.
TRANSACTION_ATTEMPTS = 5
# Items one TransactWriteItems request may hold, from the DynamoDB API reference page
# "TransactWriteItems". A job's transaction contains its job item and its key items.
MAX_TRANSACTION_ITEMS = 100
TRANSACTION_BACKOFF_S = 0.05

_JOB_PREFIX = "job#"
_KEY_PREFIX = "key#"
# Error codes DynamoDB returns when a request exceeds the table's or the account's throughput.
_THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)


def table_definition(table_name: str) -> dict[str, Any]:
    """Return the CreateTable keyword arguments of the job table named ``table_name``."""
    return {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "kind", "AttributeType": "S"},
            {"AttributeName": "created_at", "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": INDEX_NAME,
                "KeySchema": [
                    {"AttributeName": "kind", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


class DynamoJobStore(JobStore):
    """Job records in a DynamoDB table laid out as ``table_definition`` describes.

    Loads are strongly consistent. Listing reads the global secondary index, which is
    eventually consistent, so a record created a moment ago may be missing from a listing.
    Records with the same ``created_at`` are listed in no defined order. ``sleep`` waits
    between attempts of a transaction that conflicted with another one.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self._sleep = sleep

    def _insert_if_absent(self, record: JobRecord) -> bool:
        job_item = self._job_item(record, write_id=_new_write_id())
        key_items = []
        for key in record.claim_keys:
            key_pk = _KEY_PREFIX + key
            _check_partition_key(key_pk, key)
            key_items.append({"pk": {"S": key_pk}, "job_name": {"S": record.job_name}})
        if len(key_items) + 1 > MAX_TRANSACTION_ITEMS:
            raise JobStoreError(
                f"job {record.job_name!r} claims {len(record.claims)} objects, but one "
                f"DynamoDB transaction holds at most {MAX_TRANSACTION_ITEMS} items (the job, "
                "its key and one item per object); lower PREPFLOW_BATCH_MAX_OBJECTS"
            )
        puts = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for item in (job_item, *key_items)
        ]
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                # botocore retries a request whose response was lost; the token makes such a
                # repeat succeed without writing again instead of failing its condition.
                self.client.transact_write_items(
                    TransactItems=puts, ClientRequestToken=uuid.uuid4().hex
                )
                return True
            except ClientError as error:
                reasons = _cancellation_reasons(error)
                if "ConditionalCheckFailed" in reasons:
                    return False
                if "TransactionConflict" not in reasons or attempt == TRANSACTION_ATTEMPTS:
                    self._raise(error, "TransactWriteItems", record.job_name)
                delay = random.uniform(0, TRANSACTION_BACKOFF_S * 2**attempt)
                logger.warning(
                    "creating job %s conflicted with another transaction (attempt %d of %d); "
                    "retrying in %.3f s",
                    record.job_name,
                    attempt,
                    TRANSACTION_ATTEMPTS,
                    delay,
                )
                self._sleep(delay)
            except BotoCoreError as error:
                self._raise(error, "TransactWriteItems", record.job_name)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _load(self, job_name: str) -> JobRecord | None:
        item = self._get_item(_JOB_PREFIX + job_name, job_name)
        if item is None:
            return None
        return JobRecord.model_validate_json(item["body"]["S"])

    def _load_by_key(self, idempotency_key: str) -> JobRecord | None:
        key_pk = _KEY_PREFIX + idempotency_key
        if len(key_pk.encode()) > MAX_PARTITION_KEY_BYTES:
            return None  # _insert_if_absent never stores such a key
        item = self._get_item(key_pk, idempotency_key)
        if item is None:
            return None
        return self._load(item["job_name"]["S"])

    def _replace_if_version(self, record: JobRecord, expected_version: int) -> bool:
        write_id = _new_write_id()
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=self._job_item(record, write_id=write_id),
                ConditionExpression="#version = :expected",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":expected": {"N": str(expected_version)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return True
        except ClientError as error:
            code = _error_code(error)
            if code == "ConditionalCheckFailedException":
                # botocore retries a put whose response was lost. If the stored item is that
                # first put, the write happened once and this is not a lost compare-and-set.
                # NOTE: a first put that another writer replaced before the retry arrived is
                # not recognised, so the caller applies its change a second time.
                stored = error.response.get("Item", {})
                return bool(stored.get("write_id", {}).get("S") == write_id)
            if code == "TransactionConflictException":
                # A transaction is writing the item, so the caller re-reads and tries again.
                return False
            self._raise(error, "PutItem", record.job_name)
        except BotoCoreError as error:
            self._raise(error, "PutItem", record.job_name)

    def _scan(self, status: JobStatus | None, limit: int) -> list[JobRecord]:
        if limit < 1:
            return []
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": INDEX_NAME,
            "KeyConditionExpression": "#kind = :kind",
            "ExpressionAttributeNames": {"#kind": "kind"},
            "ExpressionAttributeValues": {":kind": {"S": JOB_KIND}},
            "ScanIndexForward": False,
        }
        if status is not None:
            request["FilterExpression"] = "#status = :status"
            request["ExpressionAttributeNames"]["#status"] = "status"
            request["ExpressionAttributeValues"][":status"] = {"S": status.value}

        records: list[JobRecord] = []
        while len(records) < limit:
            # Without a filter every item read is returned, so read no more than needed.
            page_size = QUERY_PAGE_SIZE if status else min(QUERY_PAGE_SIZE, limit - len(records))
            try:
                page = self.client.query(**request, Limit=page_size)
            except (ClientError, BotoCoreError) as error:
                self._raise(error, "Query", f"index {INDEX_NAME}")
            records.extend(
                JobRecord.model_validate_json(item["body"]["S"]) for item in page["Items"]
            )
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return records[:limit]

    def _get_item(self, pk: str, subject: str) -> dict[str, Any] | None:
        try:
            response = self.client.get_item(
                TableName=self.table_name, Key={"pk": {"S": pk}}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            self._raise(error, "GetItem", subject)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _job_item(self, record: JobRecord, *, write_id: str) -> dict[str, Any]:
        item = {
            "pk": {"S": _JOB_PREFIX + record.job_name},
            "kind": {"S": JOB_KIND},
            "created_at": {"S": _sortable_time(record.created_at)},
            "job_name": {"S": record.job_name},
            "idempotency_key": {"S": record.idempotency_key},
            "status": {"S": record.status.value},
            "version": {"N": str(record.version)},
            "write_id": {"S": write_id},
            "body": {"S": record.model_dump_json()},
        }
        _check_item_size(item, record)
        return item

    def _raise(self, error: ClientError | BotoCoreError, operation: str, subject: str) -> NoReturn:
        """Raise JobStoreError for a failed DynamoDB call, naming the table and what to do."""
        where = f"DynamoDB {operation} on table {self.table_name!r} for {subject!r} failed"
        if isinstance(error, BotoCoreError):
            raise JobStoreError(
                f"{where}: {error}; check the network, the region and the AWS credentials"
            ) from error

        code = _error_code(error)
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ResourceNotFoundException":
            region = self.client.meta.region_name
            raise JobTableNotFoundError(
                f"{where}: table {self.table_name!r} not found in region {region!r} "
                f"({message}); deploy the stack that creates it, or set PREPFLOW_JOBS_TABLE "
                "to the name of the deployed table"
            ) from error
        if code in _THROTTLING_CODES:
            raise JobStoreError(
                f"{where}: throttled after botocore's retries ({code}: {message}); try again "
                "later, or raise the table's throughput quota"
            ) from error
        raise JobStoreError(f"{where}: {code}: {message}") from error


def _new_write_id() -> str:
    return uuid.uuid4().hex


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _cancellation_reasons(error: ClientError) -> set[str]:
    """Return the reason codes of a cancelled transaction; empty for any other error."""
    if _error_code(error) != "TransactionCanceledException":
        return set()
    return {str(reason.get("Code")) for reason in error.response.get("CancellationReasons", [])}


def _check_partition_key(pk: str, idempotency_key: str) -> None:
    """Raise JobStoreError if ``pk`` is longer than DynamoDB accepts for a partition key."""
    length = len(pk.encode())
    if length > MAX_PARTITION_KEY_BYTES:
        raise JobStoreError(
            f"idempotency key {idempotency_key[:80]!r}... is too long for DynamoDB: its "
            f"partition key would be {length:,} bytes, above the maximum of "
            f"{MAX_PARTITION_KEY_BYTES:,}; use shorter object keys or a shorter request id"
        )


def _sortable_time(moment: datetime) -> str:
    """Return ``moment`` in UTC as ``2024-06-04T10:00:00.000000+00:00``; naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _check_item_size(item: dict[str, Any], record: JobRecord) -> None:
    """Raise JobStoreError if ``item`` may exceed DynamoDB's item size limit.

    Each name and string counts its UTF-8 bytes, as DynamoDB counts them; a number counts its
    decimal digits plus one, at least DynamoDB's "one byte per two digits plus one".
    """
    size = 0
    for name, value in item.items():
        for kind, text in value.items():
            size += len(name.encode()) + len(text.encode()) + (1 if kind == "N" else 0)
    if size <= MAX_ITEM_BYTES:
        return

    fields = record.model_dump(mode="json")
    field_sizes = {name: len(json.dumps(value)) for name, value in fields.items()}
    largest = sorted(field_sizes, key=field_sizes.__getitem__, reverse=True)[:3]
    listed = ", ".join(f"{name} ({field_sizes[name]:,} bytes)" for name in largest)
    raise JobStoreError(
        f"job {record.job_name!r} cannot be stored: its DynamoDB item would be about "
        f"{size:,} bytes, above the {MAX_ITEM_BYTES:,}-byte item limit; largest fields: "
        f"{listed}. Request fewer input objects per job (a narrower prefix)"
    )
