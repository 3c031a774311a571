"""Idempotency keys and the job names derived from them.

One idempotency key gives at most one processing job: the job name is a pure function of the
key, and SageMaker (or the local runner) rejects a second job with the same name. The name
reads ``<job prefix>-<file name, cleaned and cut>-<12 hex digits of SHA-256(key)>``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

from prepflow.jobs.spec import JOB_NAME_MAX_LENGTH, check_job_name

# 48 bits: two distinct keys share a suffix with probability about n**2 / 2**49, which stays
# below one in a million up to roughly 23,000 jobs sharing the same readable part.
HASH_LENGTH = 12
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_DATA_SUFFIXES = re.compile(r"(\.(csv|tsv|txt|json|jsonl|ndjson|parquet|gz|gzip|zip|bz2|zst))+$")


def object_idempotency_key(
    bucket: str,
    key: str,
    *,
    version_id: str | None,
    sequencer: str | None,
    etag: str | None = None,
) -> str:
    """Return the key that makes two ObjectCreated events the same work.

    A version id names one upload exactly; without versioning, the sequencer does (S3 gives
    each PUT of a key a larger sequencer). A listing gives neither on S3, so there the ETag
    distinguishes uploads. With none of them, the object itself is the unit.
    """
    if version_id:
        return f"s3://{bucket}/{key}#version={version_id}"
    if sequencer:
        return f"s3://{bucket}/{key}#sequencer={sequencer.upper()}"
    if etag:
        return f"s3://{bucket}/{key}#etag={etag}"
    return f"s3://{bucket}/{key}"


def manual_idempotency_key(
    object_keys: Iterable[tuple[str, str]], output_uri: str, request_id: str | None
) -> str:
    """Return the key of a manual request: its exact objects (key and ETag) and its output."""
    digest = hashlib.sha256()
    for key, etag in sorted(object_keys):
        digest.update(f"{key}\0{etag}\n".encode())
    suffix = f"#request={request_id}" if request_id else ""
    return f"manual:{digest.hexdigest()}->{output_uri}{suffix}"


def attempt_key(first_key: str, attempt: int) -> str:
    """Return the idempotency key of the ``attempt``-th job of a trigger; the first keeps it."""
    return first_key if attempt == 1 else f"{first_key}#attempt={attempt}"


def first_attempt_key(idempotency_key: str, attempt: int) -> str:
    """Return the key of a trigger's first job from the key of its ``attempt``-th job."""
    return idempotency_key.removesuffix(attempt_key("", attempt))


def batch_idempotency_key(object_keys: Iterable[str]) -> str:
    """Return the key of a batch job: its objects' idempotency keys, in any order.

    A batch of one object is that object's own job, so it keeps the object's key.
    """
    unique = sorted(set(object_keys))
    if len(unique) == 1:
        return unique[0]
    digest = hashlib.sha256()
    for key in unique:
        digest.update(f"{key}\n".encode())
    return f"batch:{digest.hexdigest()}"


def job_name(job_prefix: str, idempotency_key: str, source_key: str) -> str:
    """Return the SageMaker job name for ``idempotency_key``; readable part from ``source_key``."""
    suffix = hashlib.sha256(idempotency_key.encode()).hexdigest()[:HASH_LENGTH]
    room = max(JOB_NAME_MAX_LENGTH - len(job_prefix) - len(suffix) - 2, 0)
    readable = readable_part(source_key)[:room].strip("-")
    parts = [job_prefix, readable, suffix] if readable else [job_prefix, suffix]
    name = "-".join(parts)
    check_job_name(name)
    return name


def readable_part(key: str) -> str:
    """Turn the file name at the end of ``key`` into lowercase ASCII words joined by hyphens."""
    file_name = key.rstrip("/").rsplit("/", 1)[-1].lower()
    stem = _DATA_SUFFIXES.sub("", file_name) or file_name
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    return _NOT_ALNUM.sub("-", ascii_stem).strip("-")
