"""Trigger events: every accepted shape, key decoding, and per-message failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from prepflow.errors import EventError
from prepflow.events import (
    MalformedRecord,
    ManualRequest,
    ObjectCreated,
    OtherS3Event,
    S3TestEvent,
    TriggerMessage,
    build_s3_notification,
    encode_notification_key,
    parse_trigger_event,
)


def only_notification(messages: list[TriggerMessage]) -> object:
    assert len(messages) == 1
    assert messages[0].error is None
    assert len(messages[0].notifications) == 1
    return messages[0].notifications[0]


def sqs_batch(*bodies: str) -> dict[str, object]:
    return {
        "Records": [
            {
                "messageId": f"msg-{index}",
                "receiptHandle": f"receipt-{index}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:111122223333:raw-input-events",
                "awsRegion": "eu-west-1",
            }
            for index, body in enumerate(bodies, start=1)
        ]
    }


def notification_for(key: str) -> dict[str, object]:
    return build_s3_notification(
        bucket="acme-ml-raw",
        key=key,
        size=10,
        etag="0123456789abcdef0123456789abcdef",
        sequencer="0066A1B2C3D4E5F6AA",
        region="eu-west-1",
        event_time=datetime(2024, 6, 4, 10, 15, tzinfo=UTC),
    )


# -- form-encoded keys of S3 notifications ------------------------------------------------------


def test_parse_form_encoded_key(load_event):
    created = only_notification(parse_trigger_event(load_event("cases/H01-event.json")))

    assert isinstance(created, ObjectCreated)
    assert created.key == "input/sales report Q1.csv"


def test_parse_plus_encoded_and_parentheses(load_event):
    created = only_notification(parse_trigger_event(load_event("cases/H02-event.json")))

    assert created.key == "input/c++ export (1).csv"


def test_parse_plus_not_left_encoded(load_event):
    created = only_notification(parse_trigger_event(load_event("cases/H02-event.json")))

    assert "c+++export+(1)" not in created.key


def test_parse_plus_not_decoded_twice(load_event):
    created = only_notification(parse_trigger_event(load_event("cases/H02-event.json")))

    assert "c   export (1)" not in created.key


def test_parse_unicode_and_percent_key(load_event):
    event = load_event("events/s3-unicode-percent-key.json")

    created = only_notification(parse_trigger_event(event))

    assert created.key == "input/café münchen 100% ~.csv"


def test_parse_s3_record_fields(load_event):
    created = only_notification(parse_trigger_event(load_event("cases/H01-event.json")))

    assert created.bucket == "acme-ml-raw"
    assert created.size == 1024
    assert created.etag == "9b2cf535f27731c974343645a3985328"
    assert created.sequencer == "0066A1B2C3D4E5F601"
    assert created.version_id is None
    assert created.event_name == "ObjectCreated:Put"
    assert created.event_time == "2024-06-04T10:15:00.123Z"


def test_parse_version_id(load_event):
    messages = parse_trigger_event(load_event("cases/H07-event-sqs.json"))

    assert messages[0].notifications[0].version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"


def test_parse_accepts_json_text(load_event):
    text = json.dumps(load_event("cases/H01-event.json"))

    created = only_notification(parse_trigger_event(text))

    assert created.key == "input/sales report Q1.csv"


def test_parse_accepts_json_bytes(load_event):
    raw = json.dumps(load_event("cases/H01-event.json")).encode()

    created = only_notification(parse_trigger_event(raw))

    assert created.key == "input/sales report Q1.csv"


# -- several records ----------------------------------------------------------------------------


def test_parse_three_records_in_order(load_event):
    messages = parse_trigger_event(load_event("cases/H06-event.json"))

    assert len(messages) == 1
    keys = [n.key for n in messages[0].notifications]
    assert keys == ["input/orders_01.csv", "input/orders_02.csv", "input/orders_03.csv"]


def test_parse_three_records_distinct_sequencers(load_event):
    messages = parse_trigger_event(load_event("cases/H06-event.json"))

    sequencers = [n.sequencer for n in messages[0].notifications]
    assert sequencers == ["0066A1B2C3D4E5F621", "0066A1B2C3D4E5F622", "0066A1B2C3D4E5F623"]


def test_parse_malformed_record_fails_alone(load_event):
    messages = parse_trigger_event(load_event("events/s3-malformed-middle-record.json"))

    first, middle, last = messages[0].notifications
    assert isinstance(first, ObjectCreated)
    assert first.key == "input/orders_a.csv"
    assert isinstance(middle, MalformedRecord)
    assert "record 1" in middle.reason
    assert isinstance(last, ObjectCreated)
    assert last.key == "input/orders_c.csv"


def test_parse_other_source_malformed():
    event = {"Records": [{"eventSource": "aws:dynamodb", "eventName": "INSERT"}]}

    (notification,) = parse_trigger_event(event)[0].notifications

    assert isinstance(notification, MalformedRecord)
    assert "aws:dynamodb" in notification.reason


def test_parse_non_object_record_malformed():
    (notification,) = parse_trigger_event({"Records": ["not a record"]})[0].notifications

    assert isinstance(notification, MalformedRecord)
    assert "record 0" in notification.reason


def test_parse_bad_size_is_malformed():
    event = notification_for("input/a.csv")
    event["Records"][0]["s3"]["object"]["size"] = "twelve"

    (notification,) = parse_trigger_event(event)[0].notifications

    assert isinstance(notification, MalformedRecord)


# -- test event, folder placeholder, empty object -----------------------------------------------


def test_parse_s3_test_event(load_event):
    notification = only_notification(parse_trigger_event(load_event("cases/H05-event-raw.json")))

    assert notification == S3TestEvent(bucket="acme-ml-raw")


def test_parse_s3_test_event_in_sqs(load_event):
    messages = parse_trigger_event(load_event("cases/H05-event-sqs.json"))

    assert len(messages) == 1
    assert messages[0].message_id == "00000000-0000-4000-8000-000000000001"
    assert messages[0].error is None
    assert messages[0].notifications == (S3TestEvent(bucket="acme-ml-raw"),)


def test_parse_folder_placeholder(load_event):
    created = only_notification(parse_trigger_event(load_event("cases/H09-event.json")))

    assert isinstance(created, ObjectCreated)
    assert created.key == "input/2024-06/"
    assert created.size == 0


def test_parse_zero_byte_object(load_event):
    created = only_notification(parse_trigger_event(load_event("cases/H10-event.json")))

    assert created.key == "input/daily_export.csv"
    assert created.size == 0
    assert created.etag == "d41d8cd98f00b204e9800998ecf8427e"


# -- EventBridge --------------------------------------------------------------------------------


def test_parse_eventbridge_object_created(load_event):
    created = only_notification(parse_trigger_event(load_event("cases/H12-event.json")))

    assert isinstance(created, ObjectCreated)
    assert created.bucket == "acme-ml-raw"
    assert created.key == "input/orders_12.csv"
    assert created.size == 2048
    assert created.etag == "9b2cf535f27731c974343645a3985328"
    assert created.sequencer == "0066A1B2C3D4E5F651"
    assert created.event_name == "ObjectCreated:PutObject"


def test_parse_eventbridge_matches_classic_record(load_event):
    from_eventbridge = only_notification(parse_trigger_event(load_event("cases/H12-event.json")))
    classic = build_s3_notification(
        bucket="acme-ml-raw",
        key="input/orders_12.csv",
        size=2048,
        etag="9b2cf535f27731c974343645a3985328",
        sequencer="0066A1B2C3D4E5F651",
        region="eu-west-1",
    )
    from_notification = only_notification(parse_trigger_event(classic))

    fields = ("bucket", "key", "size", "etag", "sequencer", "version_id")
    for name in fields:
        assert getattr(from_eventbridge, name) == getattr(from_notification, name), name


def test_parse_eventbridge_key_not_decoded(load_event):
    created = only_notification(
        parse_trigger_event(load_event("events/eventbridge-plus-colon-key.json"))
    )

    assert created.key == "input/export 2024-06-05T08:30:00+02:00 a+b.csv"


def test_parse_eventbridge_version_id(load_event):
    event = load_event("events/eventbridge-version-id.json")

    created = only_notification(parse_trigger_event(event))

    assert created.version_id == "Zm9vYmFyLnZlcnNpb24uMDAx"


def test_parse_eventbridge_missing_detail():
    event = {"detail-type": "Object Created", "source": "aws.s3", "detail": {"bucket": {}}}

    notification = only_notification(parse_trigger_event(event))

    assert isinstance(notification, MalformedRecord)
    assert "EventBridge" in notification.reason


# -- SQS and SNS wrappers -----------------------------------------------------------------------


def test_parse_sqs_message_ids(load_event):
    messages = parse_trigger_event(load_event("cases/H13-event-sqs.json"))

    assert [m.message_id for m in messages] == [
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
        "00000000-0000-4000-8000-000000000003",
    ]


def test_parse_sqs_s3_body_decoded_once(load_event):
    messages = parse_trigger_event(load_event("cases/H13-event-sqs.json"))

    (created,) = messages[0].notifications
    assert created.key == "input/weekly summary.csv"


def test_parse_sns_inside_sqs(load_event):
    messages = parse_trigger_event(load_event("cases/H13-event-sqs.json"))

    assert messages[1].error is None
    (created,) = messages[1].notifications
    assert created.key == "input/weekly summary.csv"
    assert created.sequencer == "0066A1B2C3D4E5F661"


def test_parse_bad_sqs_message_alone(load_event):
    messages = parse_trigger_event(load_event("cases/H13-event-sqs.json"))

    failed = [m for m in messages if m.error is not None]
    assert len(failed) == 1
    assert failed[0].message_id == "00000000-0000-4000-8000-000000000003"
    assert failed[0].notifications == ()
    assert "00000000-0000-4000-8000-000000000003" in failed[0].error
    assert "not valid JSON" in failed[0].error


def test_parse_unknown_sqs_bodies_fail_alone(load_event):
    messages = parse_trigger_event(load_event("events/sqs-unknown-body.json"))

    good, unknown_object, array = messages
    assert good.error is None
    assert good.notifications[0].key == "input/good.csv"
    assert unknown_object.message_id == "20000000-0000-4000-8000-000000000002"
    assert "unrecognised trigger event" in unknown_object.error
    assert array.message_id == "20000000-0000-4000-8000-000000000003"
    assert "must be a JSON object" in array.error


def test_parse_same_event_delivered_twice(load_event):
    messages = parse_trigger_event(load_event("cases/H07-event-sqs.json"))

    first, second = (m.notifications[0] for m in messages)
    assert first == second
    assert first.key == "input/orders_07.csv"


def test_parse_sqs_wrapping_eventbridge(load_event):
    messages = parse_trigger_event(load_event("events/sqs-eventbridge.json"))

    assert messages[0].message_id == "10000000-0000-4000-8000-000000000001"
    (created,) = messages[0].notifications
    assert created.key == "input/q3 data+v2.csv"
    assert created.sequencer == "0066B0C1D2E3F40020"


def test_parse_sns_to_lambda(load_event):
    created = only_notification(parse_trigger_event(load_event("events/sns-lambda-s3.json")))

    assert created.key == "input/monthly totals + tax.csv"
    assert created.bucket == "acme-ml-raw"


def test_parse_sns_bad_message_fails_alone():
    event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "not json"}}]}

    (message,) = parse_trigger_event(event)

    (notification,) = message.notifications
    assert isinstance(notification, MalformedRecord)
    assert "message of SNS record 0 is not valid JSON" in notification.reason


# -- manual requests ----------------------------------------------------------------------------


def test_parse_manual_request(load_event):
    request = only_notification(parse_trigger_event(load_event("events/manual-request.json")))

    assert request == ManualRequest(
        input_uri="s3://acme-ml-raw/input/customers.csv",
        output_uri="s3://acme-ml-processed/output/manual-run/",
        request_id="rerun-2024-06-05",
    )


def test_parse_manual_request_without_output():
    request = only_notification(parse_trigger_event({"input_data_path": "s3://acme-ml-raw/input/"}))

    assert request == ManualRequest(input_uri="s3://acme-ml-raw/input/", output_uri=None)


def test_parse_manual_unknown_field(load_event):
    notification = only_notification(
        parse_trigger_event(load_event("events/manual-unknown-field.json"))
    )

    assert isinstance(notification, MalformedRecord)
    assert "priority" in notification.reason


def test_parse_manual_bad_input_uri(load_event):
    notification = only_notification(parse_trigger_event(load_event("events/manual-bad-uri.json")))

    assert isinstance(notification, MalformedRecord)
    assert "input_data_path" in notification.reason
    assert "https://acme-ml-raw" in notification.reason


def test_parse_manual_bad_output_uri():
    event = {"input_data_path": "s3://acme-ml-raw/input/a.csv", "output_data_path": "/tmp/out"}

    notification = only_notification(parse_trigger_event(event))

    assert isinstance(notification, MalformedRecord)
    assert "output_data_path" in notification.reason


def test_parse_manual_input_not_string():
    notification = only_notification(parse_trigger_event({"input_data_path": 42}))

    assert isinstance(notification, MalformedRecord)


def test_parse_manual_request_inside_sqs():
    messages = parse_trigger_event(
        sqs_batch(json.dumps({"input_data_path": "s3://acme-ml-raw/input/a.csv"}))
    )

    assert messages[0].message_id == "msg-1"
    assert messages[0].notifications == (
        ManualRequest(input_uri="s3://acme-ml-raw/input/a.csv", output_uri=None),
    )


# -- payloads with no known shape ---------------------------------------------------------------


def test_parse_unknown_shape_raises():
    with pytest.raises(EventError, match="unrecognised trigger event"):
        parse_trigger_event({"hello": "world"})


def test_parse_invalid_json_raises():
    with pytest.raises(EventError, match="not valid JSON"):
        parse_trigger_event("{not json")


def test_parse_json_array_raises():
    with pytest.raises(EventError, match="must be a JSON object"):
        parse_trigger_event("[]")


# -- encoding keys as S3 does, and the round trip -----------------------------------------------


def test_encode_space_as_plus():
    assert encode_notification_key("input/sales report Q1.csv") == "input/sales+report+Q1.csv"


def test_encode_plus_and_parentheses():
    assert encode_notification_key("input/c++ export (1).csv") == "input/c%2B%2B+export+%281%29.csv"


def test_encode_keeps_slashes():
    assert encode_notification_key("a/b/c.csv") == "a/b/c.csv"


def test_build_notification_shape():
    event = notification_for("input/a b.csv")

    (record,) = event["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["awsRegion"] == "eu-west-1"
    assert record["eventTime"] == "2024-06-04T10:15:00.000Z"
    assert record["s3"]["bucket"]["name"] == "acme-ml-raw"
    assert record["s3"]["bucket"]["arn"] == "arn:aws:s3:::acme-ml-raw"
    assert record["s3"]["object"] == {
        "key": "input/a+b.csv",
        "size": 10,
        "eTag": "0123456789abcdef0123456789abcdef",
        "sequencer": "0066A1B2C3D4E5F6AA",
    }


def test_build_notification_version_id():
    event = build_s3_notification(
        bucket="acme-ml-raw",
        key="input/a.csv",
        size=1,
        etag="e",
        sequencer="01",
        region="eu-west-1",
        version_id="v-123",
    )

    assert event["Records"][0]["s3"]["object"]["versionId"] == "v-123"
    assert only_notification(parse_trigger_event(event)).version_id == "v-123"


NASTY_KEYS = [
    "input/sales report Q1.csv",
    "input/c++ export (1).csv",
    "input/a+b.csv",
    "input/100%.csv",
    "input/literal %2B not encoded.csv",
    "input/literal %25 and %20.csv",
    "input/++leading and trailing++",
    "input/ space at both ends .csv",
    "input/café münchen.csv",
    "input/日本語のファイル.csv",
    "input/emoji 📊 report.csv",
    "input/2024-06-04T10:15:00+02:00.csv",
    "input/query?a=1&b=2#frag.csv",
    "input/quotes 'single' \"double\".csv",
    "input/back\\slash.csv",
    "input/tab\tand\nnewline.csv",
    "input/brackets [1] {2} <3>.csv",
    "input/tilde~star*semicolon;comma,.csv",
    "input/dots..in..name...csv",
    "input/" + "x" * 900 + ".csv",
]


@pytest.mark.parametrize("key", NASTY_KEYS)
def test_notification_round_trip(key):
    event = json.loads(json.dumps(notification_for(key)))

    created = only_notification(parse_trigger_event(event))

    assert created.key == key


@pytest.mark.parametrize("key", NASTY_KEYS)
def test_notification_round_trip_through_sqs(key):
    body = json.dumps(notification_for(key))

    messages = parse_trigger_event(sqs_batch(body))

    assert messages[0].notifications[0].key == key


@pytest.mark.parametrize("key", NASTY_KEYS)
def test_encode_plus_only_for_spaces(key):
    encoded = encode_notification_key(key)

    assert " " not in encoded
    assert encoded.count("+") == key.count(" ")


def test_parse_delete_record_is_other_event():
    event = build_s3_notification(
        bucket="acme-ml-raw",
        key="input/gone file.csv",
        size=0,
        etag="x",
        sequencer="01",
        region="eu-west-1",
    )
    event["Records"][0]["eventName"] = "ObjectRemoved:Delete"

    (message,) = parse_trigger_event(event)

    assert message.notifications == (
        OtherS3Event("ObjectRemoved:Delete", "s3://acme-ml-raw/input/gone file.csv"),
    )
