"""Moving data across the container boundary: inputs in, config files, outputs and message out.

``root`` is the host folder that appears as ``/opt/ml`` inside the job.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from prepflow.errors import StorageError
from prepflow.jobs.spec import MAX_REASON_LENGTH, ProcessingInput, ProcessingJobSpec
from prepflow.storage.base import ObjectStore, check_key, parse_s3_uri
from prepflow.storage.local import LocalObjectStore

logger = logging.getLogger(__name__)

ML_ROOT = "/opt/ml/"


def host_path(root: Path, container_path: str) -> Path:
    """Map a container path under /opt/ml to its place in the host folder ``root``."""
    if not container_path.startswith(ML_ROOT):
        raise StorageError(f"path {container_path!r} is not under {ML_ROOT}")
    return root / container_path[len(ML_ROOT) :].strip("/")


def stage_inputs(store: ObjectStore, spec: ProcessingJobSpec, root: Path) -> None:
    """Copy every input's objects under its LocalPath, keyed by their path below the prefix."""
    for item in spec.processing_inputs:
        target = host_path(root, item.s3_input.local_path)
        target.mkdir(parents=True, exist_ok=True)
        placed = 0
        for bucket, key, relative in _input_objects(store, item):
            check_key(relative)
            destination = target / relative
            if destination.exists():
                raise StorageError(
                    f"input {item.input_name!r}: s3://{bucket}/{key} would overwrite "
                    f"{item.s3_input.local_path}/{relative}, staged from another object"
                )
            store.download_file(bucket, key, destination)
            placed += 1
        logger.info("staged %d object(s) for input %s", placed, item.input_name)


def _input_objects(store: ObjectStore, item: ProcessingInput) -> list[tuple[str, str, str]]:
    s3_input = item.s3_input
    if s3_input.s3_data_type == "ManifestFile":
        bucket, key = parse_s3_uri(s3_input.s3_uri)
        prefix_uri, relatives = store.read_manifest(bucket, key)
        objects = []
        for relative in relatives:
            object_bucket, object_key = parse_s3_uri(prefix_uri + relative)
            objects.append((object_bucket, object_key, relative))
        return objects
    bucket, prefix = parse_s3_uri(s3_input.s3_uri)
    found = [
        (bucket, info.key, _below(info.key, prefix)) for info in store.list_objects(bucket, prefix)
    ]
    if not found:
        raise StorageError(
            f"input {item.input_name!r}: no S3 objects found under {s3_input.s3_uri}"
        )
    return found


def _below(key: str, prefix: str) -> str:
    relative = key[len(prefix) :].lstrip("/")
    return relative or posixpath.basename(key)


def write_config(spec: ProcessingJobSpec, root: Path, *, host: str, hosts: list[str]) -> None:
    """Write /opt/ml/config/*.json and create every output folder and /opt/ml/output."""
    config = root / "config"
    config.mkdir(parents=True, exist_ok=True)
    request = spec.to_request()
    request["ProcessingJobArn"] = f"arn:aws:sagemaker:local:000000000000:processing-job/{spec.name}"
    (config / "processingjobconfig.json").write_text(json.dumps(request, indent=1))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": hosts}, indent=1)
    )
    for output in spec.processing_output_config.outputs:
        host_path(root, output.s3_output.local_path).mkdir(parents=True, exist_ok=True)
    (root / "output").mkdir(parents=True, exist_ok=True)


def upload_outputs(store: LocalObjectStore, spec: ProcessingJobSpec, root: Path) -> list[str]:
    """Upload every regular file under each output's LocalPath to its S3Uri.

    The job controls those folders, so nothing there is followed or trusted: symbolic links
    (which would be read on the host, outside the job's view), FIFOs and devices are left out,
    each with a warning in the returned list.
    """
    uploaded = 0
    warnings: list[str] = []
    for output in spec.processing_output_config.outputs:
        local_path = output.s3_output.local_path.rstrip("/")
        source = host_path(root, local_path)
        if source.is_symlink() or not source.is_dir():
            warnings.append(f"{local_path} is not a folder; output {output.output_name!r} is empty")
            continue
        bucket, prefix = parse_s3_uri(output.s3_output.s3_uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        for path in _entries(source):
            relative = path.relative_to(source).as_posix()
            if _upload_regular_file(store, bucket, prefix + relative, path):
                uploaded += 1
            else:
                warnings.append(f"{local_path}/{relative} is not a regular file; not uploaded")
    logger.info("job %s: uploaded %d output file(s)", spec.name, uploaded)
    return warnings


def _entries(folder: Path) -> list[Path]:
    """Return every entry below ``folder`` except folders, without following links."""
    found = []
    for directory, folders, names in os.walk(folder):
        found += [Path(directory, name) for name in folders if Path(directory, name).is_symlink()]
        found += [Path(directory, name) for name in names]
    return sorted(found)


def _upload_regular_file(store: LocalObjectStore, bucket: str, key: str, path: Path) -> bool:
    """Upload ``path`` if it is a regular file; return False for anything else."""
    with _open_regular(path) as handle:
        if handle is None:
            return False
        store.upload_fileobj(bucket, key, handle)
    return True


@contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO | None]:
    """Open ``path`` for reading if it is a regular file, else give None.

    O_NOFOLLOW and the fstat check close the gap between listing and opening, in which the
    job could swap the file for a link; O_NONBLOCK keeps a FIFO from blocking the open.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        yield None
        return
    with os.fdopen(descriptor, "rb") as handle:
        yield handle if stat.S_ISREG(os.fstat(descriptor).st_mode) else None


def read_exit_message(root: Path) -> str | None:
    """Return the first 1 KB of /opt/ml/output/message, as DescribeProcessingJob's ExitMessage.

    Only a regular file counts; a link or FIFO that the job put there is ignored.
    """
    with _open_regular(root / "output" / "message") as handle:
        if handle is None:
            return None
        data = handle.read(MAX_REASON_LENGTH)
    return data.decode("utf-8", "replace")
