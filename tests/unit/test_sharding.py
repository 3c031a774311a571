"""prepflow's ShardedByS3Key rule, host file names, the recipe check and merged row counts."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from prepflow.errors import RecipeError, StorageError
from prepflow.jobs.sharding import host_names, merged_counts, shard
from prepflow.processing.paths import per_host_name
from prepflow.processing.recipe import check_shardable, parse_recipe
from prepflow.storage.local import LocalObjectStore

KEYS = [f"input/part{number:03d}.csv" for number in range(23)]


def test_shard_one_host_is_identity():
    assert shard(KEYS, 0, 1) == KEYS


@pytest.mark.parametrize("hosts", [2, 3, 7, 23, 40])
def test_shard_places_each_object_once(hosts):
    shares = [shard(KEYS, index, hosts) for index in range(hosts)]

    placed = Counter(key for share in shares for key in share)
    assert placed == Counter(KEYS)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


def test_shard_follows_input_order():
    assert shard(KEYS[:7], 0, 3) == [KEYS[0], KEYS[3], KEYS[6]]
    assert shard(KEYS[:7], 2, 3) == [KEYS[2], KEYS[5]]
    assert shard(KEYS[:2], 2, 3) == []


def test_shard_rejects_unknown_host():
    with pytest.raises(ValueError, match=r"host index 3 is outside 0\.\.2"):
        shard(KEYS, 3, 3)


def test_host_names_match_sagemaker():
    assert host_names(1) == ["algo-1"]
    assert host_names(3) == ["algo-1", "algo-2", "algo-3"]


def test_per_host_name():
    assert per_host_name("report.json", "algo-2") == "report-algo-2.json"
    assert per_host_name("rejected.csv", None) == "rejected.csv"


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ("  - {step: impute, columns: [x], strategy: median}\n", "step 1 (impute) fits"),
        ("  - {step: deduplicate}\n", "step 1 (deduplicate) compares all rows"),
    ],
)
def test_recipe_rejected_on_several_hosts(steps, problem):
    recipe = parse_recipe(f"version: 1\nsteps:\n{steps}")

    check_shardable(recipe, 1)
    with pytest.raises(RecipeError, match="cannot run on 2 instances") as caught:
        check_shardable(recipe, 2)

    assert problem in str(caught.value)


def test_unique_column_rejected_on_several_hosts():
    recipe = parse_recipe("version: 1\nschema:\n  columns:\n    id: {type: int, unique: true}\n")

    with pytest.raises(RecipeError, match="column 'id' is unique"):
        check_shardable(recipe, 3)


def test_applied_artifacts_and_split_allowed_on_several_hosts():
    recipe = parse_recipe(
        "version: 1\n"
        "steps:\n  - {step: impute, columns: [x], strategy: median}\n"
        "output: {split: {train: 0.8, test: 0.2}}\n"
        "artifacts: {apply: prepflow-fitted-0123456789ab}\n"
    )

    check_shardable(recipe, 4)


def report_request(count: int) -> dict:
    return {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": count}},
        "ProcessingOutputConfig": {
            "Outputs": [{"OutputName": "report", "S3Output": {"S3Uri": "s3://logs/reports/job-1/"}}]
        },
    }


def put_report(store: LocalObjectStore, name: str, rows: dict) -> None:
    store.put_object("logs", f"reports/job-1/{name}", json.dumps({"rows": rows}).encode())


def test_merged_counts_sum_hosts(tmp_path):
    store = LocalObjectStore(tmp_path)
    put_report(store, "report-algo-1.json", {"in": 5, "out": 3, "rejected": 1, "removed": 1})
    put_report(store, "report-algo-2.json", {"in": 4, "out": 4, "rejected": 0, "removed": 0})
    # Not a host of this job; a leftover file must not be counted.
    put_report(store, "report-algo-9.json", {"in": 100, "out": 100, "rejected": 0})

    counts = merged_counts(store, report_request(3))

    assert counts == {"rows_in": 9, "rows_out": 7, "rows_rejected": 1}


def test_merged_counts_unknown_without_reports(tmp_path):
    store = LocalObjectStore(tmp_path)

    assert merged_counts(store, report_request(2)) == dict.fromkeys(
        ["rows_in", "rows_out", "rows_rejected"]
    )
    assert merged_counts(store, {"ProcessingOutputConfig": {"Outputs": []}})["rows_in"] is None


def test_merged_counts_reject_malformed_report(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put_object("logs", "reports/job-1/report-algo-1.json", b'{"rows": {"in": "five"}}')

    with pytest.raises(StorageError, match=r"report-algo-1\.json"):
        merged_counts(store, report_request(2))
