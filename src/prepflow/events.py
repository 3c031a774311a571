"""Trigger events: every payload shape that can start work, parsed into a few plain records.

Accepted shapes:

- an S3 event notification (``{"Records": [{"eventSource": "aws:s3", ...}]}``), one or more
  records, and its ``s3:TestEvent`` (no ``Records``);
- an EventBridge "Object Created" event from ``aws.s3``;
- any of these inside an SQS message body, also inside an SNS notification inside SQS, and
  an SNS-to-Lambda event;
- the manual request ``{"input_data_path": "s3://...", "output_data_path": "s3://..."}``.

Key decoding happens here and nowhere else:

- S3 notification keys are form-encoded (``+`` for a space, ``%2B`` for ``+``), as the S3 user
  guide page "Event message structure" states, so they are decoded once with ``unquote_plus``.
- EventBridge keys are used as they arrive. Real EventBridge events carry literal characters
  that a notification would encode (a ``:`` in a key appears as ``:``, not ``%3A``), and moto's
  EventBridge delivery does the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from prepflow.errors import EventError

logger = logging.getLogger(__name__)

S3_TEST_EVENT = "s3:TestEvent"
MANUAL_REQUEST_FIELDS = frozenset({"input_data_path", "output_data_path", "request_id"})


@dataclass(frozen=True, slots=True)
class ObjectCreated:
    """One new object, from any event shape; ``key`` is decoded."""

    bucket: str
    key: str
    size: int | None
    etag: str | None
    sequencer: str | None
    version_id: str | None
    event_name: str
    event_time: str | None = None


@dataclass(frozen=True, slots=True)
class S3TestEvent:
    """The message S3 sends once when a notification configuration is saved."""

    bucket: str | None


@dataclass(frozen=True, slots=True)
class ManualRequest:
    """A request to process what lies at ``input_uri`` (an object or a prefix)."""

    input_uri: str
    output_uri: str | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class MalformedRecord:
    """A record that could not be read; the others of its event are still processed."""

    reason: str


@dataclass(frozen=True, slots=True)
class OtherS3Event:
    """An S3 event that creates nothing to process (a delete, a restore, a tag change)."""

    event_name: str
    subject: str


Notification = ObjectCreated | S3TestEvent | ManualRequest | MalformedRecord | OtherS3Event


@dataclass(frozen=True, slots=True)
class TriggerMessage:
    """One unit of delivery: an SQS message (with its id) or the whole direct event."""

    message_id: str | None
    notifications: tuple[Notification, ...]
    error: str | None = None


def parse_trigger_event(payload: Mapping[str, Any] | str | bytes) -> list[TriggerMessage]:
    """Split a trigger event into messages; raise EventError if the payload has no known shape.

    A malformed SQS message becomes a TriggerMessage with ``error`` set, so one bad message
    fails alone and the rest of the batch goes on.
    """
    event = _load_json(payload, description="trigger event")
    records = event.get("Records")
    if isinstance(records, list) and records and _is_sqs_batch(records):
        # Imported on use: the powertools data classes take about 0.1 s to import, which
        # every job's supervisor process would pay without ever parsing an event.
        from aws_lambda_powertools.utilities.data_classes import SQSEvent

        return [_parse_sqs_message(record) for record in SQSEvent(dict(event)).records]
    return [TriggerMessage(message_id=None, notifications=tuple(_parse_body(event)))]


def encode_notification_key(key: str) -> str:
    """Encode a key the way S3 writes it into an event notification (the inverse of decoding)."""
    return quote_plus(key, safe="/")


def build_s3_notification(
    *,
    bucket: str,
    key: str,
    size: int,
    etag: str,
    sequencer: str,
    region: str,
    version_id: str | None = None,
    event_time: datetime | None = None,
    configuration_id: str = "prepflow-local",
) -> dict[str, Any]:
    """Return the ObjectCreated:Put notification that S3 sends for one new object."""
    when = (event_time or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    s3_object: dict[str, Any] = {
        "key": encode_notification_key(key),
        "size": size,
        "eTag": etag,
        "sequencer": sequencer,
    }
    if version_id:
        s3_object["versionId"] = version_id
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": when,
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "prepflow-local"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": sequencer, "x-amz-id-2": "prepflow-local"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "prepflow-local"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": s3_object,
        },
    }
    return {"Records": [record]}


def _load_json(payload: Mapping[str, Any] | str | bytes, *, description: str) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    try:
        loaded = json.loads(payload)
    except (ValueError, TypeError) as error:
        preview = payload[:80] if isinstance(payload, str | bytes) else payload
        raise EventError(f"{description} is not valid JSON ({error}): {preview!r}") from error
    if not isinstance(loaded, dict):
        raise EventError(f"{description} must be a JSON object, got {type(loaded).__name__}")
    return loaded


def _is_sqs_batch(records: list[Any]) -> bool:
    return all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)


def _parse_sqs_message(record: Any) -> TriggerMessage:
    message_id = record.get("messageId")
    try:
        if not isinstance(message_id, str) or not isinstance(record.get("body"), str):
            raise EventError("SQS record without a messageId or a text body")
        body = _load_json(record.body, description=f"body of SQS message {message_id}")
        notifications = tuple(_parse_body(body))
    except EventError as error:
        logger.error("SQS message %s rejected: %s", message_id, error)
        return TriggerMessage(message_id=message_id, notifications=(), error=str(error))
    return TriggerMessage(message_id=message_id, notifications=notifications)


def _parse_body(event: Mapping[str, Any]) -> Iterator[Notification]:
    """Yield the notifications of one event; unwrap SNS envelopes on the way."""
    if event.get("Type") == "Notification" and "Message" in event:
        yield from _parse_body(_load_json(event["Message"], description="SNS message"))
    elif event.get("Event") == S3_TEST_EVENT:
        yield S3TestEvent(bucket=event.get("Bucket"))
    elif event.get("detail-type") == "Object Created" and event.get("source") == "aws.s3":
        yield _parse_eventbridge(event)
    elif event.get("source") == "aws.s3" and "detail-type" in event:
        yield OtherS3Event(str(event["detail-type"]), _eventbridge_subject(event))
    elif "input_data_path" in event:
        yield _parse_manual(event)
    elif isinstance(event.get("Records"), list):
        yield from _parse_records(event["Records"])
    else:
        raise EventError(
            f"unrecognised trigger event with top-level fields {sorted(event)[:8]}; expected an "
            "S3 notification, an EventBridge 'Object Created' event, an SQS or SNS message "
            "holding one, or a manual request with 'input_data_path'"
        )


def _parse_records(records: list[Any]) -> Iterator[Notification]:
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            yield MalformedRecord(f"record {index} is not a JSON object")
        elif record.get("EventSource") == "aws:sns" or "Sns" in record:
            yield from _parse_sns_record(record, index)
        elif record.get("eventSource") == "aws:s3":
            yield _parse_s3_record(record, index)
        else:
            yield MalformedRecord(
                f"record {index} has eventSource {record.get('eventSource')!r}, expected 'aws:s3'"
            )


def _parse_sns_record(record: Mapping[str, Any], index: int) -> Iterator[Notification]:
    sns = record.get("Sns")
    message = sns.get("Message") if isinstance(sns, Mapping) else None
    if not isinstance(message, str):
        yield MalformedRecord(f"SNS record {index} has no Sns.Message text")
        return
    try:
        yield from _parse_body(_load_json(message, description=f"message of SNS record {index}"))
    except EventError as error:
        yield MalformedRecord(str(error))


def _parse_s3_record(record: Mapping[str, Any], index: int) -> Notification:
    event_name = record.get("eventName") or ""
    # A hand-written record may lack eventName; S3 always sets it.
    if isinstance(event_name, str) and event_name and not event_name.startswith("ObjectCreated:"):
        return OtherS3Event(event_name, _record_subject(record))
    try:
        _check_s3_shape(record.get("s3"), key_field="key", etag_field="eTag")
    except ValueError as error:
        return MalformedRecord(f"S3 record {index} is invalid: {error}")
    from aws_lambda_powertools.utilities.data_classes import S3Event  # imported on use, as above

    parsed = next(iter(S3Event({"Records": [record]}).records))
    s3_object = parsed.s3.get_object
    return ObjectCreated(
        bucket=parsed.s3.bucket.name,
        key=unquote_plus(s3_object.key),
        size=_optional_int(s3_object.get("size")),
        etag=s3_object.get("eTag") or None,
        sequencer=s3_object.get("sequencer") or None,
        version_id=s3_object.get("versionId") or None,
        event_name=str(event_name),
        event_time=_optional_text(record.get("eventTime")),
    )


def _parse_eventbridge(event: Mapping[str, Any]) -> Notification:
    detail = event.get("detail")
    try:
        _check_s3_shape(detail, key_field="key", etag_field="etag")
    except ValueError as error:
        return MalformedRecord(f"EventBridge event is invalid: {error}")
    assert isinstance(detail, Mapping)
    s3_object = detail["object"]
    return ObjectCreated(
        bucket=detail["bucket"]["name"],
        key=s3_object["key"],
        size=_optional_int(s3_object.get("size")),
        etag=s3_object.get("etag") or None,
        sequencer=s3_object.get("sequencer") or None,
        version_id=s3_object.get("version-id") or None,
        event_name=f"ObjectCreated:{detail.get('reason', 'Unknown')}",
        event_time=_optional_text(event.get("time")),
    )


def _check_s3_shape(part: Any, *, key_field: str, etag_field: str) -> None:
    """Raise ValueError naming the first field of ``{bucket, object}`` that is missing or bad."""
    if not isinstance(part, Mapping):
        raise ValueError("the bucket and object fields are missing")
    bucket, s3_object = part.get("bucket"), part.get("object")
    if not isinstance(bucket, Mapping) or not isinstance(bucket.get("name"), str):
        raise ValueError("bucket.name is missing or not text")
    if not isinstance(s3_object, Mapping) or not isinstance(s3_object.get(key_field), str):
        raise ValueError(f"object.{key_field} is missing or not text")
    size = s3_object.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int | str)):
        raise ValueError(f"object.size {size!r} is not a whole number")
    if isinstance(size, str) and not size.isdigit():
        raise ValueError(f"object.size {size!r} is not a whole number")
    for name in (etag_field, "sequencer", "versionId", "version-id"):
        value = s3_object.get(name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"object.{name} {value!r} is not text")


def _record_subject(record: Mapping[str, Any]) -> str:
    try:
        s3 = record["s3"]
        return f"s3://{s3['bucket']['name']}/{unquote_plus(s3['object']['key'])}"
    except (KeyError, TypeError, AttributeError):
        return "an S3 record without bucket or key"


def _eventbridge_subject(event: Mapping[str, Any]) -> str:
    try:
        detail = event["detail"]
        return f"s3://{detail['bucket']['name']}/{detail['object']['key']}"
    except (KeyError, TypeError):
        return "an EventBridge event without bucket or key"


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _parse_manual(event: Mapping[str, Any]) -> Notification:
    unknown = sorted(set(event) - MANUAL_REQUEST_FIELDS)
    if unknown:
        return MalformedRecord(
            f"manual request has unknown fields {unknown}; allowed: {sorted(MANUAL_REQUEST_FIELDS)}"
        )
    input_uri = event.get("input_data_path")
    output_uri = event.get("output_data_path")
    if not isinstance(input_uri, str) or not input_uri.startswith("s3://"):
        return MalformedRecord(f"input_data_path must be an s3:// URI, got {input_uri!r}")
    if output_uri is not None and (
        not isinstance(output_uri, str) or not output_uri.startswith("s3://")
    ):
        return MalformedRecord(f"output_data_path must be an s3:// URI, got {output_uri!r}")
    request_id = event.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        return MalformedRecord(f"request_id must be text, got {request_id!r}"[:200])
    return ManualRequest(
        input_uri=input_uri,
        output_uri=output_uri,
        request_id=str(request_id) if request_id is not None else None,
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
