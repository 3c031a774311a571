"""Jobs on several instances: host names, prepflow's emulation of ``ShardedByS3Key``, merged counts.

SageMaker names the instances of a processing job ``algo-1`` to ``algo-N`` and, for an input
with ``S3DataDistributionType: ShardedByS3Key``, documents only that each instance receives
about 1/N of the input's objects. The local runner needs an exact rule, so prepflow uses its
own: the objects in the manifest's order (sorted by key for an ``S3Prefix`` input), object
``i`` (from 0) on host ``(i mod N) + 1``. Inputs that are ``FullyReplicated`` reach every host.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from prepflow.errors import StorageError
from prepflow.jobs.spec import ProcessingInput
from prepflow.jobs.template import REPORT_OUTPUT
from prepflow.processing.paths import REPORT_JSON, per_host_name
from prepflow.storage.base import ObjectStore, parse_s3_uri

logger = logging.getLogger(__name__)

HOST_PREFIX = "algo-"
SHARDED = "ShardedByS3Key"
# Counts the job record keeps; each host's report.json holds them under "rows".
COUNT_FIELDS = {"rows_in": "in", "rows_out": "out", "rows_rejected": "rejected"}
# A report is a few kilobytes; anything much larger is not one of the step's reports.
MAX_REPORT_BYTES = 16 << 20

T = TypeVar("T")


def host_names(count: int) -> list[str]:
    """Return the host names of a job on ``count`` instances, as SageMaker names them."""
    return [f"{HOST_PREFIX}{number}" for number in range(1, count + 1)]


def shard(objects: Sequence[T], host_index: int, host_count: int) -> list[T]:
    """Return the objects that host ``host_index`` (0 for algo-1) of ``host_count`` receives.

    ``objects`` must already be in the input's order. Every object goes to exactly one host,
    and the shares differ by at most one object. A host may receive none.
    """
    if not 0 <= host_index < host_count:
        raise ValueError(f"host index {host_index} is outside 0..{host_count - 1}")
    return [item for position, item in enumerate(objects) if position % host_count == host_index]


def is_sharded(item: ProcessingInput) -> bool:
    return item.s3_input.s3_data_distribution_type == SHARDED


def instance_count(request: Mapping[str, Any]) -> int:
    """Return the InstanceCount of a stored CreateProcessingJob request (1 when absent)."""
    cluster = request.get("ProcessingResources", {}).get("ClusterConfig", {})
    count = cluster.get("InstanceCount", 1)
    return count if isinstance(count, int) and count >= 1 else 1


def merged_counts(store: ObjectStore, request: Mapping[str, Any]) -> dict[str, int | None]:
    """Sum the row counts of every host's ``report-algo-<i>.json`` of a completed job.

    This is the one rule for the counts of a job on several instances, locally and on AWS:
    DescribeProcessingJob returns one ExitMessage for the whole job, which cannot hold every
    host's counts. A host without objects writes no report and counts nothing. Without a
    report output (a user script), or when no report was found, the counts are None
    (unknown) rather than one host's share.
    """
    unknown: dict[str, int | None] = dict.fromkeys(COUNT_FIELDS)
    report_uri = _report_output_uri(request)
    if report_uri is None:
        return unknown
    bucket, prefix = parse_s3_uri(report_uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    count = instance_count(request)
    names = {prefix + per_host_name(REPORT_JSON, host) for host in host_names(count)}
    totals = dict.fromkeys(COUNT_FIELDS, 0)
    found = 0
    for info in store.list_objects(bucket, prefix):
        if info.key not in names:
            continue
        if info.size > MAX_REPORT_BYTES:
            raise StorageError(
                f"{info.uri} is {info.size} bytes, larger than a report can be; it was not "
                "written by the built-in step"
            )
        rows = _report_rows(store.get_object(bucket, info.key), info.uri)
        for field, name in COUNT_FIELDS.items():
            totals[field] += rows[name]
        found += 1
    if not found:
        logger.warning("no host report under %s; the job's row counts stay unknown", report_uri)
        return unknown
    return dict(totals)


def _report_output_uri(request: Mapping[str, Any]) -> str | None:
    outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for output in outputs:
        if output.get("OutputName") == REPORT_OUTPUT[0] and "S3Output" in output:
            return str(output["S3Output"]["S3Uri"])
    return None


def _report_rows(body: bytes, uri: str) -> dict[str, int]:
    try:
        rows = json.loads(body)["rows"]
        counts = {name: rows[name] for name in COUNT_FIELDS.values()}
    except (ValueError, KeyError, TypeError) as error:
        raise StorageError(
            f"{uri} is not a report of the built-in step: expected a JSON object with "
            '"rows": {"in", "out", "rejected"}'
        ) from error
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in counts.values()):
        raise StorageError(f'{uri}: the row counts under "rows" must be integers, got {counts}')
    return counts
