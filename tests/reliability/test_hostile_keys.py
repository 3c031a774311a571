"""Hostile object keys and planted symbolic links: rejected or contained, never outside the store.

Each test keeps a folder beside the home with a secret file in it. Links planted in the raw
bucket point there. The tests then check that the secret's content never appears in any output,
log or command output, that the folder is unchanged, and that no new file appears in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from prepflow.errors import InvalidKeyError, StorageError
from prepflow.events import build_s3_notification
from prepflow.jobs.spec import JobStatus
from prepflow.local.watch import Watcher
from prepflow.orchestrator import OutcomeKind
from prepflow.settings import load_settings

SECRET = b"prepflow-test-secret-7f3a9c"
DATA = b"order_id,amount\n1,10\n2,20\n"
RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
JOB_TIMEOUT_SECONDS = 180

ESCAPING_KEYS = [
    "../escape.csv",
    "input/../../escape.csv",
    "input/../../../outside/secret.csv",
    "/etc/passwd",
    "/input/a.csv",
    "input/a\0b.csv",
    "input//a.csv",
    "input/./a.csv",
]
CONTROL_KEYS = ["input/a\nb.csv", "input/a\rb.csv", "input/a\x1b[31mb.csv", "input/a\x7fb.csv"]
# Names Windows reserves, and names some file systems alter: stored as they are here.
RESERVED_KEYS = [
    "input/CON.csv",
    "input/NUL.csv",
    "input/aux.csv",
    "input/com1.csv",
    "input/trailing dot.",
    "input/trailing space ",
    "input/folder./a.csv",
    "input/folder /a.csv",
]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    (folder / "nested").mkdir(parents=True)
    (folder / "secret.csv").write_bytes(b"order_id,amount\n" + SECRET + b",1\n")
    (folder / "nested" / "secret.csv").write_bytes(b"order_id,amount\n" + SECRET + b",2\n")
    return folder


@pytest.fixture
def app(make_app):
    return make_app(isolation="none")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Return every file below ``folder`` with its content, links not followed."""
    return {
        str(path.relative_to(folder)): b"<link>" if path.is_symlink() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() or path.is_symlink()
    }


def files_containing(folder: Path, marker: bytes) -> list[str]:
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and marker in path.read_bytes()
    ]


def store_calls(app, key: str, download: Path) -> list[Callable[[], object]]:
    return [
        lambda: app.store.head_object(RAW, key),
        lambda: app.store.get_object(RAW, key),
        lambda: app.store.download_file(RAW, key, download),
        lambda: app.store.put_object(RAW, key, b"overwritten"),
        lambda: app.store.open_log(RAW, key),
    ]


def plant_links(app, outside: Path) -> dict[str, str]:
    """Plant links in the raw bucket; return each key that reaches outside through one."""
    raw = app.store.buckets_root / app.settings.buckets.raw / "input"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "leak.csv").symlink_to(outside / "secret.csv")
    (raw / "linked").symlink_to(outside)
    (raw / "real").mkdir()
    (raw / "real" / "deeper").symlink_to(outside / "nested")
    return {
        "input/leak.csv": "a link to a file",
        "input/linked/secret.csv": "a file below a link to a folder",
        "input/linked/nested/secret.csv": "a file two folders below a link",
        "input/real/deeper/secret.csv": "a file below a linked parent folder",
    }


@pytest.mark.parametrize("key", ESCAPING_KEYS + CONTROL_KEYS)
def test_store_rejects_escaping_key(app, tmp_path, outside, key, figures):
    before = snapshot(tmp_path / "outside")
    download = tmp_path / "download.csv"
    operations = {
        "put": lambda: app.store.put_object(RAW, key, DATA),
        "head": lambda: app.store.head_object(RAW, key),
        "get": lambda: app.store.get_object(RAW, key),
        "download": lambda: app.store.download_file(RAW, key, download),
        "log": lambda: app.store.open_log(RAW, key),
    }

    for call in operations.values():
        with pytest.raises(InvalidKeyError, match="object key"):
            call()

    assert snapshot(tmp_path / "outside") == before
    assert not (tmp_path / "escape.csv").exists()
    assert not download.exists()
    figures.record(
        f"store call with key {key!r} (`..`, absolute, NUL or control character)",
        len(operations),
        "rejected, nothing read or written",
    )


def test_key_of_1024_bytes_accepted_1025_rejected(app, figures):
    folders = "/".join(["f" * 200] * 4)
    key = f"input/{folders}/" + "k" * (1024 - len(f"input/{folders}/") - 4) + ".csv"
    assert len(key.encode()) == 1024

    stored = app.store.put_object(RAW, key, DATA)
    longer = key[:-4] + "k.csv"
    single = "input/" + "s" * (1024 - len("input/") - 4) + ".csv"

    assert stored.key == key
    assert app.store.get_object(RAW, key) == DATA
    with pytest.raises(InvalidKeyError, match="longer than 1024 bytes"):
        app.store.put_object(RAW, longer, DATA)
    with pytest.raises(InvalidKeyError, match="path segment longer than 255 bytes"):
        app.store.put_object(RAW, single, DATA)
    assert [info.key for info in app.store.list_objects(RAW, "input/")] == [key]
    figures.record(
        "keys of 1,024 and 1,025 bytes, and a 1,014-byte file name",
        3,
        "1,024 stored; others rejected",
    )


@pytest.mark.parametrize("key", RESERVED_KEYS)
def test_reserved_name_contained(app, tmp_path, key, figures):
    stored = app.store.put_object(RAW, key, DATA)

    path = app.store.buckets_root / RAW / key
    assert stored.key == key
    assert path.read_bytes() == DATA
    assert app.store.get_object(RAW, key) == DATA
    assert path.resolve().is_relative_to((app.store.buckets_root / RAW).resolve())
    figures.record(f"reserved or altered file name {key!r}", 1, "stored under its own key")


def test_run_processes_reserved_names(cli, home, tmp_path, figures):
    folder = tmp_path / "data"
    folder.mkdir()
    names = ["CON.csv", "NUL.csv", "aux.csv", "com1.csv"]
    for name in names:
        (folder / name).write_bytes(DATA)

    result = cli("run", str(folder), "--json", env={"PREPFLOW_ISOLATION": "none"})

    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert [job["status"] for job in jobs] == ["Completed"] * len(names)
    processed = home / "buckets" / "mlops-lambda-preprocessing-pipeline-processed-data-bucket"
    outputs = sorted(path.name for path in processed.rglob("processed_*"))
    assert outputs == sorted(f"processed_{name}" for name in names)
    figures.record(
        "reserved names (CON, NUL, aux, com1) through `prepflow run`",
        len(names),
        "all processed, outputs under their names",
    )


def test_store_never_follows_planted_links(app, tmp_path, outside, figures):
    keys = plant_links(app, outside)
    before = snapshot(outside)
    download = tmp_path / "download.csv"

    attempts = 0
    for key in keys:
        for call in store_calls(app, key, download):
            attempts += 1
            with pytest.raises(InvalidKeyError, match="symbolic link"):
                call()
    for key in ("input/linked/new.csv", "input/real/deeper/new/new.csv"):
        attempts += 1
        with pytest.raises(InvalidKeyError, match="symbolic link"):
            app.store.put_object(RAW, key, b"new")

    listed = [info.key for info in app.store.list_objects(RAW, "input/")]
    assert listed == []
    assert snapshot(outside) == before
    assert not download.exists()
    assert files_containing(app.store.home, SECRET) == []
    figures.record(
        "store calls through links planted in a bucket (to a file, a folder, a parent folder)",
        attempts,
        "rejected; nothing outside read, changed or created",
    )


def test_invoke_rejects_linked_keys(cli, home, tmp_path, outside, make_app, figures):
    app = make_app(isolation="none")
    keys = plant_links(app, outside)
    before = snapshot(outside)
    events = [
        build_s3_notification(
            bucket=RAW, key=key, size=20, etag="0" * 32, sequencer=f"{n:016X}", region="us-east-1"
        )
        for n, key in enumerate(keys, start=1)
    ]

    result = cli("invoke", json.dumps(events), "--json", env={"PREPFLOW_ISOLATION": "none"})

    assert result.returncode == 1
    for key in keys:
        assert f"s3://{RAW}/{key}" in result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failures) == len(keys)
    assert all("symbolic link" in line for line in failures), failures
    assert SECRET.decode() not in result.stdout + result.stderr
    assert app.jobs.list_jobs() == []
    assert snapshot(outside) == before
    assert files_containing(home, SECRET) == []
    figures.record(
        "`prepflow invoke` events naming keys behind planted links",
        len(keys),
        "each failed naming the link; no job",
    )


def test_manual_prefix_skips_planted_links(app, outside, figures):
    keys = plant_links(app, outside)
    app.store.put_object(RAW, "input/real/good.csv", DATA)

    result = app.orchestrator.handle(
        {"input_data_path": f"s3://{RAW}/input/", "request_id": "links"}
    )

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.STARTED, outcome.reason
    (record,) = app.wait([outcome.job_name], timeout=JOB_TIMEOUT_SECONDS)
    assert record.status == JobStatus.COMPLETED, record.failure_reason
    assert record.inputs == [f"s3://{RAW}/input/real/good.csv"]
    assert record.rows_in == 2
    assert files_containing(app.store.home, SECRET) == []
    figures.record(
        "manual request for a prefix holding planted links",
        len(keys),
        "links skipped; only the real file read",
    )


def test_watch_skips_planted_links(home, outside, make_app, figures):
    app = make_app(isolation="none")
    keys = plant_links(app, outside)
    real = app.store.buckets_root / RAW / "input" / "real" / "good.csv"
    real.write_bytes(DATA)
    before = snapshot(outside)
    skipped: list[str] = []
    watcher = Watcher(app, interval_seconds=0.05, settle_seconds=0)
    watcher._log_skip_once = lambda key, reason: skipped.append(f"{key}: {reason}")  # type: ignore[method-assign]

    results = watcher.scan_once()

    names = [name for result in results for name in result.job_names]
    records = app.wait(names, timeout=JOB_TIMEOUT_SECONDS)
    assert [r.inputs for r in records] == [[f"s3://{RAW}/input/real/good.csv"]]
    assert [r.status for r in records] == [JobStatus.COMPLETED]
    assert sorted(skipped) == [
        "input/leak.csv: it is a symbolic link, which the store never follows",
        "input/linked: it is a symbolic link, which the store never follows",
        "input/real/deeper: it is a symbolic link, which the store never follows",
    ]
    assert snapshot(outside) == before
    assert files_containing(home, SECRET) == []
    figures.record(
        "`watch` scan over a folder with 3 planted links and 1 real file",
        len(keys),
        "links skipped and logged; 1 job",
    )


def test_run_does_not_write_through_link(cli, home, tmp_path, outside, figures):
    app_settings = load_settings(home=home)
    raw = home / "buckets" / app_settings.buckets.raw / "input"
    raw.mkdir(parents=True)
    target = outside / "target.csv"
    target.write_bytes(b"unchanged")
    (raw / "orders.csv").symlink_to(target)
    (raw / "sub").symlink_to(outside)
    source = tmp_path / "data"
    (source / "sub").mkdir(parents=True)
    (source / "orders.csv").write_bytes(DATA)
    (source / "sub" / "new.csv").write_bytes(DATA)
    before = snapshot(outside)

    result = cli("run", str(source), env={"PREPFLOW_ISOLATION": "none"})

    assert result.returncode == 1
    assert result.stderr.count("symbolic link") == 2, result.stderr
    assert target.read_bytes() == b"unchanged"
    assert snapshot(outside) == before
    figures.record(
        "`prepflow run` uploads onto planted links (a file and a folder)",
        2,
        "both rejected; nothing outside changed",
    )


def test_job_log_link_not_read(cli, home, outside, make_app, figures):
    app = make_app(isolation="none")
    app.store.put_object(RAW, "input/orders.csv", DATA)
    (outcome,) = app.orchestrator.handle(
        {"input_data_path": f"s3://{RAW}/input/orders.csv"}
    ).outcomes
    (record,) = app.wait([outcome.job_name], timeout=JOB_TIMEOUT_SECONDS)
    log = (
        app.store.buckets_root / app.settings.buckets.logs / "logs" / record.job_name / "algo-1.log"
    )
    shown = cli("jobs", "logs", record.job_name)
    log.unlink()
    log.symlink_to(outside / "secret.csv")

    result = cli("jobs", "logs", record.job_name)

    assert shown.returncode == 0, shown.stderr
    assert "rows in" in shown.stderr + shown.stdout
    assert result.returncode == 1
    assert "symbolic link" in result.stderr
    assert SECRET.decode() not in result.stdout + result.stderr
    figures.record(
        "`prepflow jobs logs` of a log replaced by a link to a secret",
        1,
        "refused; secret not printed",
    )


def test_store_error_is_storage_error():
    # The CLI and the orchestrator report StorageError as a failed input, not a crash.
    assert issubclass(InvalidKeyError, StorageError)
