"""Malformed trigger events: a bad record or message fails alone, never with a traceback."""

from __future__ import annotations

import contextlib
import json
import random

import pytest

from prepflow.errors import EventError
from prepflow.events import MalformedRecord, ObjectCreated, parse_trigger_event

GOOD_S3 = {
    "Records": [
        {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": "acme-ml-raw"},
                "object": {"key": "input/a.csv", "size": 3, "eTag": "x", "sequencer": "01"},
            },
        }
    ]
}


def sqs(body, message_id="m-1"):
    return {"eventSource": "aws:sqs", "messageId": message_id, "body": body}


@pytest.mark.parametrize(
    "record",
    [
        {"EventSource": "aws:sns", "Sns": {"Type": "Notification"}},
        {"EventSource": "aws:sns"},
        {"Sns": "x"},
        {"Sns": {"Message": "not json"}},
        {"eventSource": "aws:s3"},
        {"eventSource": "aws:s3", "s3": {"bucket": {}, "object": {}}},
        {"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": {"key": 7}}},
        "a string",
    ],
)
def test_bad_record_beside_good_one(record):
    payload = {"Records": [record, *GOOD_S3["Records"]]}

    (message,) = parse_trigger_event(payload)

    assert isinstance(message.notifications[0], MalformedRecord)
    assert isinstance(message.notifications[-1], ObjectCreated)


@pytest.mark.parametrize(
    "bad",
    [
        {"eventSource": "aws:sqs"},
        {"eventSource": "aws:sqs", "messageId": "m-2"},
        {"eventSource": "aws:sqs", "messageId": "m-2", "body": 5},
        sqs("not json", "m-2"),
        sqs(json.dumps({"Records": [{"EventSource": "aws:sns", "Sns": {}}]}), "m-2"),
    ],
)
def test_bad_sqs_message_fails_alone(bad):
    payload = {"Records": [sqs(json.dumps(GOOD_S3)), bad]}

    good, failed = parse_trigger_event(payload)

    assert isinstance(good.notifications[0], ObjectCreated)
    assert failed.error is not None or isinstance(failed.notifications[0], MalformedRecord)


def _mutate(value, rng):
    """Return a copy of ``value`` with one random part replaced by a random odd value."""
    odd = [None, 0, -1, "", "x", [], {}, [None], {"a": None}, 1.5, True, "%ZZ", "a+b"]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        copy = dict(value)
        if rng.random() < 0.2:
            del copy[key]
        else:
            copy[key] = _mutate(value[key], rng)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = rng.randrange(len(value))
        return [*value[:index], _mutate(value[index], rng), *value[index + 1 :]]
    return rng.choice(odd)


def test_random_mutations_only_event_error():
    rng = random.Random(20261204)
    shapes = [GOOD_S3, {"Records": [sqs(json.dumps(GOOD_S3))]}]
    for _ in range(3000):
        payload = _mutate(rng.choice(shapes), rng)
        with contextlib.suppress(EventError):
            parse_trigger_event(payload if isinstance(payload, dict) else {"value": payload})
