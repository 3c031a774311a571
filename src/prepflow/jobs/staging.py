"""Moving data across the container boundary: inputs in, config files, outputs and message out.

``root`` is the host folder that appears as ``/opt/ml`` inside the job.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

from prepflow.errors import StorageError, describe_write_error
from prepflow.jobs import sharding
from prepflow.jobs.spec import MAX_REASON_LENGTH, ProcessingInput, ProcessingJobSpec
from prepflow.storage.base import ObjectStore, check_key, parse_s3_uri
from prepflow.storage.local import LocalObjectStore

logger = logging.getLogger(__name__)

ML_ROOT = "/opt/ml/"
COPY_CHUNK_BYTES = 1 << 20


def host_path(root: Path, container_path: str) -> Path:
    """Map a container path under /opt/ml to its place in the host folder ``root``."""
    if not container_path.startswith(ML_ROOT):
        raise StorageError(f"path {container_path!r} is not under {ML_ROOT}")
    return root / container_path[len(ML_ROOT) :].strip("/")


def stage_inputs(
    store: ObjectStore,
    spec: ProcessingJobSpec,
    root: Path,
    *,
    host_index: int = 0,
    host_count: int = 1,
) -> None:
    """Copy every input's objects under its LocalPath, keyed by their path below the prefix.

    A ShardedByS3Key input gets only the share of host ``host_index`` of ``host_count``.
    """
    for item in spec.processing_inputs:
        target = host_path(root, item.s3_input.local_path)
        target.mkdir(parents=True, exist_ok=True)
        objects = _input_objects(store, item)
        if sharding.is_sharded(item):
            objects = sharding.shard(objects, host_index, host_count)
        placed = 0
        for bucket, key, relative in objects:
            check_key(relative)
            destination = target / relative
            if destination.exists():
                raise StorageError(
                    f"input {item.input_name!r}: s3://{bucket}/{key} would overwrite "
                    f"{item.s3_input.local_path}/{relative}, staged from another object"
                )
            store.download_file(bucket, key, destination)
            placed += 1
        logger.info(
            "job %s: staged %d object(s) for input %s on host %d of %d",
            spec.name, placed, item.input_name, host_index + 1, host_count,
        )  # fmt: skip


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
    # Sorted by key, the order that prepflow's sharding rule assumes for an S3Prefix input.
    listed = sorted(store.list_objects(bucket, prefix), key=lambda info: info.key)
    found = [(bucket, info.key, _below(info.key, prefix)) for info in listed]
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


def upload_outputs(
    store: LocalObjectStore, spec: ProcessingJobSpec, roots: dict[str, Path]
) -> list[str]:
    """Upload every regular file under each output's LocalPath, on every host, to its S3Uri.

    ``roots`` maps each host name to its ``/opt/ml`` folder. Each output's files, from all
    hosts, are copied to a draft folder (``LocalObjectStore.publish``), and the drafts are
    renamed into place only once every output was copied. So a reader of the bucket never
    sees part of an output, and a copy that fails (a full disk) or a runner that dies while
    copying publishes nothing. Raises StorageError before anything is published when two
    hosts wrote the same file, which on SageMaker would silently keep only one of them.

    The job controls those folders, so nothing there is followed or trusted: symbolic links
    (which would be read on the host, outside the job's view), FIFOs and devices are left
    out, each with a warning in the returned list.
    """
    warnings: list[str] = []
    # Messages name the host only when there are several.
    labels = {host: f"{host}: " if len(roots) > 1 else "" for host in roots}
    drafts = ExitStack()
    with drafts:
        uploaded = _copy_outputs(spec, roots, labels, store, drafts, warnings)
    logger.info("job %s: uploaded %d output file(s)", spec.name, uploaded)
    return warnings


def _copy_outputs(
    spec: ProcessingJobSpec,
    roots: dict[str, Path],
    labels: dict[str, str],
    store: LocalObjectStore,
    drafts: ExitStack,
    warnings: list[str],
) -> int:
    """Copy every output into a draft entered on ``drafts``; return how many files."""
    uploaded = 0
    for output in spec.processing_output_config.outputs:
        local_path = output.s3_output.local_path.rstrip("/")
        files: dict[str, tuple[str, Path]] = {}
        owners: dict[str, str] = {}
        for host, root in roots.items():
            source = host_path(root, local_path)
            if source.is_symlink() or not source.is_dir():
                warnings.append(
                    f"{labels[host]}{local_path} is not a folder; output "
                    f"{output.output_name!r} gets no files from it"
                )
                continue
            for path in _entries(source):
                relative = path.relative_to(source).as_posix()
                if relative in owners:
                    raise StorageError(
                        f"output {output.output_name!r}: hosts {owners[relative]} and {host} "
                        f"both wrote {local_path}/{relative}, and both would be uploaded to "
                        "the same S3 key; give each host's files names of their own (for "
                        "example with the host name from /opt/ml/config/resourceconfig.json)"
                    )
                owners[relative] = host
                files[relative] = (labels[host], path)
        uri = output.s3_output.s3_uri
        uploaded += _publish_output(store, uri, local_path, files, drafts, warnings)
    return uploaded


def _publish_output(
    store: LocalObjectStore,
    uri: str,
    local_path: str,
    files: dict[str, tuple[str, Path]],
    drafts: ExitStack,
    warnings: list[str],
) -> int:
    """Copy one output's files (relative name to message label and file) into a draft.

    The draft is published when ``drafts`` closes without an error; returns how many files.
    """
    if not files:
        return 0
    bucket, prefix = parse_s3_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not prefix:
        # A bucket's root is no folder that could be renamed into place.
        return _upload_each(store, bucket, local_path, files, warnings)
    uploaded = 0
    draft = drafts.enter_context(store.publish(bucket, prefix))
    for relative, (label, path) in sorted(files.items()):
        check_key(prefix + relative)
        if _copy_regular_file(path, draft / relative, f"s3://{bucket}/{prefix}{relative}"):
            uploaded += 1
        else:
            warnings.append(_not_regular(label, local_path, relative))
    return uploaded


def _not_regular(label: str, local_path: str, relative: str) -> str:
    return f"{label}{local_path}/{relative} is not a regular file; not uploaded"


def _upload_each(
    store: LocalObjectStore,
    bucket: str,
    local_path: str,
    files: dict[str, tuple[str, Path]],
    warnings: list[str],
) -> int:
    uploaded = 0
    for relative, (label, path) in sorted(files.items()):
        if _upload_regular_file(store, bucket, relative, path):
            uploaded += 1
        else:
            warnings.append(_not_regular(label, local_path, relative))
    return uploaded


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


def _copy_regular_file(path: Path, target: Path, uri: str) -> bool:
    """Copy ``path`` to ``target`` if it is a regular file; return False for anything else.

    Raises StorageError naming ``uri`` when the copy cannot be written, a full disk included.
    """
    with _open_regular(path) as handle:
        if handle is None:
            return False
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as copy:
                shutil.copyfileobj(handle, copy, COPY_CHUNK_BYTES)
        except OSError as error:
            raise StorageError(describe_write_error(error, uri)) from error
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
