"""Idempotency keys and job names: SageMaker's name rules, determinism and uniqueness."""

from __future__ import annotations

import hashlib
import re

import pytest

from prepflow import naming
from prepflow.events import ObjectCreated, parse_trigger_event

# ProcessingJobName as the SageMaker API reference (CreateProcessingJob) defines it.
SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def name_for(key: str, *, prefix: str = "prepflow", sequencer: str | None = "01") -> str:
    idempotency_key = naming.object_idempotency_key(
        "acme-ml-raw", key, version_id=None, sequencer=sequencer
    )
    return naming.job_name(prefix, idempotency_key, key)


def created_from(event: dict) -> ObjectCreated:
    (message,) = parse_trigger_event(event)
    (created,) = message.notifications
    assert isinstance(created, ObjectCreated)
    return created


def name_of_event(created: ObjectCreated) -> str:
    idempotency_key = naming.object_idempotency_key(
        created.bucket, created.key, version_id=created.version_id, sequencer=created.sequencer
    )
    return naming.job_name("prepflow", idempotency_key, created.key)


# -- idempotency keys ---------------------------------------------------------------------------


def test_key_prefers_version_id():
    key = naming.object_idempotency_key(
        "acme-ml-raw", "input/a.csv", version_id="v1", sequencer="0066A1"
    )

    assert key == "s3://acme-ml-raw/input/a.csv#version=v1"


def test_key_uses_sequencer_without_version():
    key = naming.object_idempotency_key(
        "acme-ml-raw", "input/a.csv", version_id=None, sequencer="0066A1"
    )

    assert key == "s3://acme-ml-raw/input/a.csv#sequencer=0066A1"


def test_key_sequencer_case_insensitive():
    lower = naming.object_idempotency_key("b", "k", version_id=None, sequencer="00abcdef")
    upper = naming.object_idempotency_key("b", "k", version_id=None, sequencer="00ABCDEF")

    assert lower == upper


def test_key_without_version_or_sequencer():
    key = naming.object_idempotency_key(
        "acme-ml-raw", "input/a.csv", version_id=None, sequencer=None
    )

    assert key == "s3://acme-ml-raw/input/a.csv"


def test_key_version_change_gives_new_key():
    first = naming.object_idempotency_key("b", "k", version_id="v1", sequencer="01")
    second = naming.object_idempotency_key("b", "k", version_id="v2", sequencer="01")

    assert first != second


def test_key_new_upload_gives_new_key():
    first = naming.object_idempotency_key("b", "k", version_id=None, sequencer="01")
    second = naming.object_idempotency_key("b", "k", version_id=None, sequencer="02")

    assert first != second


def test_manual_key_ignores_object_order():
    forward = naming.manual_idempotency_key([("a", "e1"), ("b", "e2")], "s3://out/", None)
    backward = naming.manual_idempotency_key([("b", "e2"), ("a", "e1")], "s3://out/", None)

    assert forward == backward


def test_manual_key_changes_with_etag():
    before = naming.manual_idempotency_key([("a", "e1")], "s3://out/", None)
    after = naming.manual_idempotency_key([("a", "e9")], "s3://out/", None)

    assert before != after


def test_manual_key_changes_with_output():
    first = naming.manual_idempotency_key([("a", "e1")], "s3://out/one/", None)
    second = naming.manual_idempotency_key([("a", "e1")], "s3://out/two/", None)

    assert first != second


def test_manual_key_changes_with_request_id():
    plain = naming.manual_idempotency_key([("a", "e1")], "s3://out/", None)
    rerun = naming.manual_idempotency_key([("a", "e1")], "s3://out/", "rerun-1")

    assert plain != rerun
    assert rerun.endswith("#request=rerun-1")


def test_manual_key_key_etag_boundary():
    # Without a separator, ("ab", "c") and ("a", "bc") would hash the same bytes.
    first = naming.manual_idempotency_key([("ab", "c")], "s3://out/", None)
    second = naming.manual_idempotency_key([("a", "bc")], "s3://out/", None)

    assert first != second


# -- job names ----------------------------------------------------------------------------------


def test_name_layout():
    idempotency_key = "s3://acme-ml-raw/input/orders.csv#sequencer=01"

    name = naming.job_name("prepflow", idempotency_key, "input/orders.csv")

    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]
    assert name == f"prepflow-orders-{digest}"


def test_name_from_decoded_key(load_event):
    created = created_from(load_event("cases/H01-event.json"))

    name = name_of_event(created)

    assert name.startswith("prepflow-sales-report-q1-")


def test_name_long_key_matches_pattern(load_event):
    name = name_of_event(created_from(load_event("cases/H15-event.json")))

    assert SAGEMAKER_NAME.match(name)


def test_name_long_key_within_limit(load_event):
    name = name_of_event(created_from(load_event("cases/H15-event.json")))

    assert len(name) == 63


def test_name_long_key_cut_before_suffix(load_event):
    created = created_from(load_event("cases/H15-event.json"))
    idempotency_key = naming.object_idempotency_key(
        created.bucket, created.key, version_id=None, sequencer=created.sequencer
    )

    name = naming.job_name("prepflow", idempotency_key, created.key)

    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]
    assert name == f"prepflow-q1-2024-customer-export-v2-final-emea-reg-{digest}"


def test_name_long_key_same_every_time(load_event):
    first = name_of_event(created_from(load_event("cases/H15-event.json")))
    second = name_of_event(created_from(load_event("cases/H15-event.json")))

    assert first == second


def test_name_repeat_upload_same_name(load_event):
    first, _, repeat = load_event("cases/H16-events.json")

    assert name_of_event(created_from(first)) == name_of_event(created_from(repeat))


def test_name_distinct_uploads_distinct_names(load_event):
    first, other, _ = load_event("cases/H16-events.json")

    assert name_of_event(created_from(first)) != name_of_event(created_from(other))


def test_name_same_key_new_upload_new_name():
    assert name_for("input/a.csv", sequencer="01") != name_for("input/a.csv", sequencer="02")


def test_name_distinct_for_many_similar_keys():
    keys = [f"input/export-{index:05d}.csv" for index in range(2000)]
    keys += [f"input/Export {index:05d}.CSV" for index in range(2000)]

    names = {name_for(key) for key in keys}

    assert len(names) == len(keys)


def test_name_same_readable_part_distinct_keys():
    first = name_for("input/2024/report.csv")
    second = name_for("input/2025/report.csv")

    assert first != second
    assert first.startswith("prepflow-report-")
    assert second.startswith("prepflow-report-")


ODD_KEYS = [
    "input/a.csv",
    "",
    "input/",
    "input/.csv",
    "input/.hidden",
    "input/---.csv",
    "input/___.csv",
    "input/日本語のファイル.csv",
    "input/Ελληνικά.csv",
    "input/emoji 📊📈.csv",
    "input/ﬁle ligature.csv",
    "input/Straße.CSV.GZ",
    "input/UPPER CASE.CSV",
    "input/data.csv.gz",
    "input/archive.tar.zst",
    "input/a" + "-" * 200 + "b.csv",
    "input/" + "x" * 1000,
    "input/" + "ab-" * 40 + ".csv",
    "input/ends-with-hyphen-.csv",
    "input/" + "é" * 300 + ".csv",
    "input/tab\tnewline\n.csv",
    "input/%2B%28encoded%29.csv",
    "////",
]


@pytest.mark.parametrize("key", ODD_KEYS)
@pytest.mark.parametrize("prefix", ["prepflow", "p", "A1", "x" * 20])
def test_name_matches_sagemaker_pattern(key, prefix):
    name = name_for(key, prefix=prefix)

    assert SAGEMAKER_NAME.match(name), name
    assert len(name) <= 63


@pytest.mark.parametrize("key", ODD_KEYS)
def test_name_starts_with_prefix(key):
    assert name_for(key, prefix="acme").startswith("acme-")


@pytest.mark.parametrize("key", ODD_KEYS)
def test_name_ends_with_hash(key):
    assert re.search(r"-[0-9a-f]{12}$", name_for(key))


def test_name_without_readable_part():
    idempotency_key = "s3://acme-ml-raw/input/日本語.csv#sequencer=01"

    name = naming.job_name("prepflow", idempotency_key, "input/日本語.csv")

    assert re.fullmatch(r"prepflow-[0-9a-f]{12}", name)


def test_name_longest_prefix_without_readable_part():
    # 49 + 1 + 12 = 62 characters, so no room is left for the file name.
    prefix = "a" * 49
    name = naming.job_name(prefix, "s3://b/input/abc.csv", "input/abc.csv")

    assert re.fullmatch(prefix + r"-[0-9a-f]{12}", name)


def test_name_fifty_character_prefix():
    prefix = "a" * 50

    name = naming.job_name(prefix, "s3://b/input/abc.csv", "input/abc.csv")

    assert len(name) == 63
    assert SAGEMAKER_NAME.match(name)


# -- readable part ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("input/sales report Q1.csv", "sales-report-q1"),
        ("input/c++ export (1).csv", "c-export-1"),
        ("input/data.csv.gz", "data"),
        ("input/events.jsonl", "events"),
        ("input/table.parquet", "table"),
        ("input/notes.v2.csv", "notes-v2"),
        ("input/café.csv", "cafe"),
        ("input/ﬁle.csv", "file"),
        ("input/日本語.csv", ""),
        ("input/.csv", "csv"),
        ("input/2024-06/", "2024-06"),
        ("no-folder.CSV", "no-folder"),
        ("input/__a__b__.csv", "a-b"),
    ],
)
def test_readable_part(key, expected):
    assert naming.readable_part(key) == expected


def test_readable_part_only_lowercase_words():
    part = naming.readable_part("input/Q1_2024 customer_export.v2 (final) EMEA.csv")

    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", part)
