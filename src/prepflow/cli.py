"""The ``prepflow`` command.

Exit codes: 0 every job completed (or the command did what it was asked); 1 a job failed or
stopped, a trigger record was rejected, or an operation failed (the reason is printed); 2 a
usage or configuration error, before any work started; 3 the job, the prepflow home or the
deployment's job table that the command names does not exist; 130 interrupted (Ctrl-C).
``run`` also exits with 1 when a file it was given is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, cast

import typer
from typer.core import TyperGroup

from prepflow import console
from prepflow.errors import (
    ConfigurationError,
    IsolationError,
    JobNotFoundError,
    JobTableNotFoundError,
    ObjectNotFoundError,
    PrepflowError,
    StorageError,
)
from prepflow.jobs import isolation
from prepflow.jobs.sharding import host_names, instance_count
from prepflow.jobs.spec import JOB_NAME_PATTERN, MAX_INSTANCE_COUNT, JobStatus
from prepflow.jobs.template import StepTemplate, upload_recipe, upload_script
from prepflow.jobstore.base import JobRecord
from prepflow.local.app import LocalApp, build_local_app
from prepflow.orchestrator import Outcome, OutcomeKind, TriggerResult
from prepflow.processing.paths import ARTIFACTS_FILE, REJECTED_FILE, REPORT_HTML
from prepflow.settings import Settings, load_settings
from prepflow.views import job_details, job_summary, side_output

if TYPE_CHECKING:
    import boto3
    from infra.config import DeploymentConfig

    from prepflow.aws.app import AwsApp
    from prepflow.deploy import CdkProject

logger = logging.getLogger("prepflow.cli")

LOG_CHUNK_BYTES = 1 << 20
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130
# Files smaller than this upload too fast for a progress line to be read.
UPLOAD_PROGRESS_MIN_BYTES = 8 << 20


class Exit(Exception):
    """Leave the command with an exit code after printing ``message`` (if any) to stderr."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _PrepflowGroup(TyperGroup):
    """Typer's command group, turning prepflow's errors into a message and an exit code.

    Translating here, inside the group, gives typer's test runner the same exit codes and
    messages as the console script. Usage errors are click's own and exit with 2.
    """

    # ``ctx`` is typed Any because typer 0.29 vendors click, so the Context class differs
    # between the typer versions that pyproject.toml allows.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exit as done:
            if done.message:
                _err(("error: " if done.code else "") + done.message)
            raise typer.Exit(done.code) from done
        except PrepflowError as error:
            _err(f"error: {error}")
            raise typer.Exit(_exit_code(error)) from error
        except KeyboardInterrupt as interrupt:
            _err("interrupted; jobs already started keep running (see 'prepflow jobs list')")
            raise typer.Exit(EXIT_INTERRUPTED) from interrupt


def _exit_code(error: PrepflowError) -> int:
    if isinstance(error, JobNotFoundError | JobTableNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, ConfigurationError):
        return EXIT_USAGE
    return EXIT_FAILED


app = typer.Typer(
    cls=_PrepflowGroup,
    name="prepflow",
    help="Event-driven preprocessing of machine-learning data, locally or on AWS.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="List, inspect and stop processing jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


class Target(StrEnum):
    LOCAL = "local"
    AWS = "aws"


TargetOption = Annotated[
    Target,
    typer.Option(
        help="local: this machine's folders and runner; aws: the deployment named by "
        "APP_PREFIX in the AWS account and region of your credentials"
    ),
]
# Seconds ``run --target aws`` waits for the deployment to start a job after an upload.
AWS_JOB_START_SECONDS = 120.0


@dataclass
class Context:
    overrides: dict[str, Any] = field(default_factory=dict)
    log_level: str | None = None

    def settings(self, **more: Any) -> Settings:
        return load_settings(**self.overrides, **more)


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[
        str | None,
        typer.Option(help="Local root folder for buckets, jobs and databases [env: PREPFLOW_HOME]"),
    ] = None,
    app_prefix: Annotated[
        str | None, typer.Option(help="Prefix of every bucket name [env: APP_PREFIX]")
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            help="DEBUG, INFO, WARNING, ERROR or CRITICAL [env: LOG_LEVEL]. Default: WARNING, "
            "and INFO for watch"
        ),
    ] = None,
) -> None:
    ctx.obj = Context(overrides={"home": home, "app_prefix": app_prefix}, log_level=log_level)


# -- run ----------------------------------------------------------------------------------------


RecipeOption = Annotated[
    Path | None,
    typer.Option(
        help="Recipe YAML for the built-in step; it is validated before any job starts",
        exists=True,
        dir_okay=False,
    ),
]


InstanceCountOption = Annotated[
    int | None,
    typer.Option(
        help="Instances (hosts) per job; above 1 each host reads its share of the files "
        "[env: PROCESSING_INSTANCE_COUNT]",
        min=1,
        max=MAX_INSTANCE_COUNT,
    ),
]


@app.command()
def run(
    ctx: typer.Context,
    paths: Annotated[
        list[Path], typer.Argument(help="Data files or folders to upload and process")
    ],
    wait: Annotated[bool, typer.Option(help="Wait for the jobs to end")] = True,
    script: Annotated[
        Path | None,
        typer.Option(
            help="Run this script under the container contract instead of the built-in step",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    recipe: RecipeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON")] = False,
    instance_type: Annotated[
        str | None, typer.Option(help="Processing instance type [env: PROCESSING_INSTANCE_TYPE]")
    ] = None,
    instance_count: InstanceCountOption = None,
    max_runtime: Annotated[
        int | None,
        typer.Option(
            help="Seconds a job may run before it is stopped [env: PREPFLOW_MAX_RUNTIME_SECONDS]"
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for the jobs before giving up", min=0)
    ] = None,
    target: TargetOption = Target.LOCAL,
) -> None:
    """Upload files to the raw-data bucket's input prefix and process each one."""
    context: Context = ctx.obj
    settings = _setup(
        context,
        processing_instance_type=instance_type,
        processing_instance_count=instance_count,
        max_runtime_seconds=max_runtime,
    )
    if script is not None and recipe is not None:
        raise Exit(
            EXIT_USAGE,
            "--script and --recipe exclude each other: a recipe drives the built-in step",
        )
    uploads = _plan_uploads(paths, settings)
    if target == Target.AWS:
        if script or recipe or instance_type or instance_count or max_runtime:
            raise Exit(
                EXIT_USAGE,
                "with --target aws the deployment's trigger starts the jobs with its own "
                "settings: drop --script, --recipe, --instance-type, --instance-count and "
                "--max-runtime, or "
                "change the deployment (PREPFLOW_STEP_SCRIPT_URI, PREPFLOW_RECIPE_URI)",
            )
        _run_aws(settings, uploads, wait=wait, as_json=as_json, timeout=timeout)
        return
    local = build_local_app(settings)
    if script is not None:
        local.orchestrator.step = _script_step(local, settings, script)
    if recipe is not None:
        local.orchestrator.step = upload_recipe(local.store, settings, recipe)

    results: list[TriggerResult] = []
    local.store.subscribe(
        settings.buckets.raw,
        lambda notification: results.append(local.orchestrator.handle(notification)),
    )
    upload_failures = []
    line = console.stderr_line(quiet=as_json)
    for path, key in uploads:
        uri = f"s3://{settings.buckets.raw}/{key}"
        try:
            _upload(local, key, path, line)
        except PrepflowError as error:
            # One file the store cannot take must not stop the others.
            upload_failures.append(Outcome(OutcomeKind.FAILED, str(path), reason=str(error)))
            continue
        finally:
            line.clear()
        if not as_json:
            _err(f"uploaded {path} to {uri}")
    outcomes = upload_failures + [o for r in results for o in r.outcomes]
    _finish(local, outcomes, wait=wait, as_json=as_json, timeout=timeout, skip_fails=True)


def _upload(local: LocalApp, key: str, path: Path, line: console.StatusLine) -> None:
    """Upload ``path`` to the raw-data bucket, showing its progress on ``line``.

    The store's notification, and so the job's submission, follows within this call.
    """
    try:
        with path.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            reader = console.UploadProgress(
                source, name=path.name, total=size, line=line, min_bytes=UPLOAD_PROGRESS_MIN_BYTES
            )
            # The store calls only read(), which the wrapper provides.
            local.store.upload_fileobj(local.settings.buckets.raw, key, cast(BinaryIO, reader))
    except FileNotFoundError as error:
        raise StorageError(f"cannot upload {str(path)!r}: file not found") from error
    except OSError as error:
        raise StorageError(f"cannot upload {str(path)!r}: {error.strerror}") from error


def _plan_uploads(paths: list[Path], settings: Settings) -> list[tuple[Path, str]]:
    """Return (file, key) pairs: a file goes to <input prefix><name>, a folder keeps its tree."""
    uploads: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and _supported(p, settings) and not _hidden(p, path, settings)
            )
            if not found:
                raise Exit(EXIT_USAGE, f"no data files ({_suffixes(settings)}) in folder {path}")
            uploads += [(p, settings.input_prefix + p.relative_to(path).as_posix()) for p in found]
        elif path.is_file():
            if not _supported(path, settings):
                raise Exit(
                    EXIT_USAGE,
                    f"{path}: unsupported file type; supported: "
                    f"{_suffixes(settings)} (set PREPFLOW_INPUT_SUFFIXES to change)",
                )
            uploads.append((path, settings.input_prefix + path.name))
        elif path.exists():
            raise Exit(EXIT_USAGE, f"{path}: not a regular file or folder")
        else:
            raise Exit(EXIT_USAGE, f"{path}: no such file or folder")
    keys = [key for _, key in uploads]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise Exit(
            EXIT_USAGE,
            f"several files would be uploaded to the same key: {repeated}; "
            "rename them or run them one at a time",
        )
    return uploads


def _run_aws(
    settings: Settings,
    uploads: list[tuple[Path, str]],
    *,
    wait: bool,
    as_json: bool,
    timeout: float | None,
) -> None:
    """Upload to the deployed raw bucket, find the job the trigger starts, and follow it."""
    from prepflow.aws.app import build_aws_app
    from prepflow.aws.s3 import S3ObjectStore

    aws = build_aws_app(settings)
    store = aws.store
    # The AWS app always talks to S3, and only that store reports upload progress.
    assert isinstance(store, S3ObjectStore)
    # Fail before the upload when the job table is missing: on a deployment the upload alone
    # starts a job, which this command could then not follow.
    aws.jobs.list_jobs(limit=1)
    uploaded = []
    problems: list[str] = []
    line = console.stderr_line(quiet=as_json)
    for path, key in uploads:
        started = datetime.now(UTC)
        try:
            reporter = console.UploadProgress(
                None,
                name=path.name,
                total=path.stat().st_size,
                line=line,
                min_bytes=UPLOAD_PROGRESS_MIN_BYTES,
            )
            info = store.upload_file(settings.buckets.raw, key, path, progress=reporter.advance)
        except FileNotFoundError:
            problems.append(f"failed: {path}: file not found")
            continue
        except PrepflowError as error:
            problems.append(f"failed: {path}: {error}")
            continue
        finally:
            line.clear()
        uploaded.append((path, info, started))
        if not as_json:
            _err(f"uploaded {path} to {info.uri}")
    # One deadline for every file, since the deployment starts their jobs in parallel; and
    # --timeout bounds the whole wait, the start of the jobs included.
    began = time.monotonic()
    start_wait = AWS_JOB_START_SECONDS if timeout is None else min(AWS_JOB_START_SECONDS, timeout)
    deadline = began + start_wait
    names: list[str] = []
    for path, info, started in uploaded:
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            names.append(aws.job_for_upload(info, started, timeout=remaining).job_name)
        except PrepflowError as error:
            problems.append(f"failed: {path}: {error}")
    for problem in problems:
        _err(problem)
    remaining_timeout = None if timeout is None else max(began + timeout - time.monotonic(), 0.0)
    try:
        with console.WaitStatus(console.stderr_line(quiet=as_json or not wait), names) as status:
            records = (
                aws.wait(names, timeout=remaining_timeout, on_poll=status.update)
                if wait
                else [aws.view(n) for n in names]
            )
    except TimeoutError as error:
        raise Exit(EXIT_FAILED, f"{error}; they keep running: see 'prepflow jobs list'") from error
    _show_jobs(aws, records, as_json=as_json)
    unfinished = [r for r in records if wait and r.status != JobStatus.COMPLETED]
    raise Exit(EXIT_FAILED if problems or unfinished else EXIT_OK)


def _hidden(path: Path, folder: Path, settings: Settings) -> bool:
    """Tell whether a folder upload leaves ``path`` out: dot folders and prepflow's home."""
    relative = path.relative_to(folder)
    if any(part.startswith(".") for part in relative.parts[:-1]):
        return True
    return path.resolve().is_relative_to(settings.home.resolve())


def _script_step(local: LocalApp, settings: Settings, script: Path) -> StepTemplate:
    step = upload_script(local.store, settings, script)
    try:
        isolation.resolve_mode(settings.isolation, list(step.entrypoint))
    except IsolationError as error:
        raise Exit(EXIT_USAGE, str(error)) from error
    return step


# -- invoke -------------------------------------------------------------------------------------


@app.command()
def invoke(
    ctx: typer.Context,
    event: Annotated[
        str | None,
        typer.Argument(
            help="A trigger event as JSON (any shape a Lambda accepts), or a JSON array of events"
        ),
    ] = None,
    event_file: Annotated[
        Path | None, typer.Option(help="Read the trigger event from this file ('-' for stdin)")
    ] = None,
    input_uri: Annotated[
        str | None,
        typer.Option(
            "--input",
            help="Manual request: s3:// URI of an object or prefix; each call is a new job",
        ),
    ] = None,
    output_uri: Annotated[
        str | None, typer.Option("--output", help="Manual request: s3:// URI for the output")
    ] = None,
    recipe: RecipeOption = None,
    instance_count: InstanceCountOption = None,
    wait: Annotated[bool, typer.Option(help="Wait for the jobs to end")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for the jobs before giving up", min=0)
    ] = None,
) -> None:
    """Send one trigger event, or a manual request, to the orchestrator."""
    context: Context = ctx.obj
    payload = _invoke_payload(event, event_file, input_uri, output_uri)
    settings = _setup(context, processing_instance_count=instance_count)
    local = build_local_app(settings)
    if recipe is not None:
        local.orchestrator.step = upload_recipe(local.store, settings, recipe)
    events = _events_of(payload)
    if not events:
        _err("no events in the input: nothing to do")
    outcomes = []
    for one_event in events:
        outcomes += local.orchestrator.handle(one_event).outcomes
    _finish(local, outcomes, wait=wait, as_json=as_json, timeout=timeout)


def _events_of(payload: str | dict[str, Any]) -> list[str | dict[str, Any]]:
    """Split a JSON array of events into its events, delivered in order; else one event."""
    if isinstance(payload, str) and payload.lstrip().startswith("["):
        try:
            events = json.loads(payload)
        except ValueError as error:
            raise Exit(EXIT_USAGE, f"the events are not valid JSON: {error}") from error
        return [e if isinstance(e, dict) else json.dumps(e) for e in events]
    return [payload]


def _invoke_payload(
    event: str | None, event_file: Path | None, input_uri: str | None, output_uri: str | None
) -> str | dict[str, Any]:
    sources = [x is not None for x in (event, event_file, input_uri)]
    if sum(sources) != 1:
        raise Exit(EXIT_USAGE, "give exactly one of: an event as JSON, --event-file, or --input")
    if event is not None:
        return event
    if event_file is not None:
        try:
            data = sys.stdin.buffer.read() if str(event_file) == "-" else event_file.read_bytes()
            return data.decode("utf-8")
        except OSError as error:
            raise Exit(EXIT_USAGE, f"cannot read {event_file}: {error.strerror}") from error
        except UnicodeDecodeError as error:
            raise Exit(
                EXIT_USAGE, f"{event_file} is not UTF-8 text ({error}); events are JSON in UTF-8"
            ) from error
    # Each --input call is a new request, so running it again after a failure starts a new
    # job. A JSON request without request_id is recognised by its objects and output instead.
    request: dict[str, Any] = {"input_data_path": input_uri, "request_id": uuid.uuid4().hex}
    if output_uri is not None:
        request["output_data_path"] = output_uri
    return request


# -- watch --------------------------------------------------------------------------------------


@app.command()
def watch(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(help="Seconds between scans", min=0.05)] = 1.0,
    settle: Annotated[
        float, typer.Option(help="Seconds a file must stay unchanged before it is taken", min=0)
    ] = 2.0,
    once: Annotated[
        bool,
        typer.Option(
            help="Process what is waiting (after it settles), wait for those jobs, then exit"
        ),
    ] = False,
    recipe: RecipeOption = None,
    script: Annotated[
        Path | None,
        typer.Option(
            help="Run this script under the container contract instead of the built-in step",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    batch_window: Annotated[
        float | None,
        typer.Option(
            help="Seconds over which settled files are collected into one job; 0 starts one "
            "job per file [default: PREPFLOW_BATCH_WINDOW_SECONDS, else 0]",
            min=0,
        ),
    ] = None,
    batch_max: Annotated[
        int | None,
        typer.Option(
            help="Files per batch job at most [default: PREPFLOW_BATCH_MAX_OBJECTS, else 97]",
            min=1,
        ),
    ] = None,
    marker: Annotated[
        str | None,
        typer.Option(
            help="File name (such as _SUCCESS) that starts one job over the data files of its "
            "folder; data files alone then start nothing [default: PREPFLOW_MARKER, else off]",
        ),
    ] = None,
    instance_count: InstanceCountOption = None,
) -> None:
    """Process every file that appears under the raw-data bucket's input prefix."""
    from prepflow.local.watch import Watcher

    context: Context = ctx.obj
    settings = _setup(
        context,
        default_level="INFO",
        batch_window_seconds=batch_window,
        batch_max_objects=batch_max,
        marker=marker,
        processing_instance_count=instance_count,
    )
    if script is not None and recipe is not None:
        raise Exit(
            EXIT_USAGE,
            "--script and --recipe exclude each other: a recipe drives the built-in step",
        )
    local = build_local_app(settings)
    if script is not None:
        local.orchestrator.step = _script_step(local, settings, script)
    if recipe is not None:
        local.orchestrator.step = upload_recipe(local.store, settings, recipe)
    watcher = Watcher(local, interval_seconds=interval, settle_seconds=settle)
    if once:
        results = watcher.scan_once()
        while watcher.unsettled:
            logger.info("waiting for %d file(s) that are still changing", watcher.unsettled)
            time.sleep(interval)
            results += watcher.scan_once()
        pending = watcher.flush()
        if pending is not None:
            results.append(pending)
        names = [n for r in results for n in r.job_names]
        records = local.wait(names)
        watcher.report_finished()
        failed = any(r.status != JobStatus.COMPLETED for r in records)
        raise Exit(EXIT_FAILED if failed else EXIT_OK)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    folder = local.store.buckets_root / local.settings.buckets.raw / local.settings.input_prefix
    _err(f"watching {folder} (Ctrl-C to stop)")
    watcher.run(stop)


# -- jobs ---------------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs with this status")] = None,
    limit: Annotated[int, typer.Option(help="Newest jobs to show", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON")] = False,
    target: TargetOption = Target.LOCAL,
) -> None:
    """List jobs, newest first."""
    settings = _setup(ctx.obj)
    view: LocalApp | AwsApp
    if target == Target.AWS:
        from prepflow.aws.app import build_aws_app

        view = build_aws_app(settings)
        records = [view.view(r.job_name) for r in view.jobs.list_jobs(status=status, limit=limit)]
    elif not _is_home(settings):
        # No home means no jobs yet: an empty list, as JSON when asked.
        _out(
            "[]"
            if as_json
            else f"no jobs: no prepflow home at {settings.home.resolve()} "
            "(set --home or PREPFLOW_HOME)"
        )
        return
    else:
        view = build_local_app(settings)
        records = [
            view.refresh(r.job_name) for r in view.jobs.list_jobs(status=status, limit=limit)
        ]
    if as_json:
        _out(json.dumps([job_summary(view, r) for r in records], indent=2))
        return
    if not records:
        _out("no jobs")
        return
    for line in _jobs_table(records):
        _out(line)


JOBS_TABLE_HEADER = (
    "JOB NAME", "STATUS", "STARTED (UTC)", "DURATION", "ROWS IN", "OUT", "REJECTED", "INPUT"
)  # fmt: skip


def _jobs_table(records: list[JobRecord]) -> list[str]:
    """Return ``jobs list``'s table: one row per job, numbers right-aligned, inputs last."""
    rows = []
    for record in records:
        started = record.started_at or record.created_at
        first_input = record.inputs[0] if record.inputs else "-"
        more = f" (+{len(record.inputs) - 1})" if len(record.inputs) > 1 else ""
        rows.append(
            (
                record.job_name,
                record.status.value,
                started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                _seconds(record.duration_s),
                _count(record.rows_in),
                _count(record.rows_out),
                _count(record.rows_rejected),
                first_input + more,
            )
        )
    return console.format_table(
        JOBS_TABLE_HEADER,
        rows,
        right_aligned=frozenset({3, 4, 5, 6}),
        colours=lambda column, cell: console.STATUS_COLOURS.get(cell) if column == 1 else None,
        colour=console.colour_enabled(sys.stdout),
    )


@jobs_app.command("describe")
def jobs_describe(
    ctx: typer.Context,
    job_name: Annotated[str, typer.Argument(help="Job name")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON")] = False,
    target: TargetOption = Target.LOCAL,
) -> None:
    """Show one job: status, inputs, outputs, counts, failure reason and request."""
    _check_job_name(job_name)
    view = _open_view(ctx.obj, target)
    record = view.view(job_name) if not isinstance(view, LocalApp) else view.refresh(job_name)
    details = job_details(view, record)
    if as_json:
        _out(json.dumps(details, indent=2))
        return
    for name, value in details.items():
        if name == "request":
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else value
        _out(f"{name + ':':<17} {text if text is not None else '-'}")
    _out("request:")
    _out(json.dumps(details["request"], indent=2))


@jobs_app.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_name: Annotated[str, typer.Argument(help="Job name")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends")
    ] = False,
    target: TargetOption = Target.LOCAL,
) -> None:
    """Print a job's output (stdout and stderr of its container command).

    A job on several instances has a log per host; each line then starts with ``[algo-2]``.
    """
    _check_job_name(job_name)
    if target == Target.AWS:
        from prepflow.aws.app import build_aws_app

        _aws_logs(build_aws_app(_setup(ctx.obj)), job_name, follow=follow)
        return
    local = _existing_app(ctx.obj)
    count = instance_count(local.jobs.get(job_name).request)
    logs = [
        _HostLog((local.settings.buckets.logs, f"logs/{job_name}/{host}.log"), host, count > 1)
        for host in host_names(count)
    ]
    while True:
        for log in logs:
            log.position = max(log.position, _print_log(local, log.key, log.position, log.write))
        if not follow or local.refresh(job_name).status.is_terminal:
            for log in logs:
                if follow:
                    # What the job wrote just before its end.
                    _print_log(local, log.key, log.position, log.write)
                log.flush()
            break
        time.sleep(0.25)


@dataclass
class _HostLog:
    """One host's log object; with ``prefixed``, each line is printed after ``[host]``."""

    key: tuple[str, str]
    host: str
    prefixed: bool
    position: int = 0
    # The end of the last chunk, held until its line is complete.
    partial: bytes = b""

    def write(self, chunk: bytes) -> None:
        if not self.prefixed:
            sys.stdout.buffer.write(chunk)
            return
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            sys.stdout.buffer.write(b"[%s] %s\n" % (self.host.encode(), line))

    def flush(self) -> None:
        if self.partial:
            self.write(b"\n")
        sys.stdout.flush()


def _print_log(
    local: LocalApp, log: tuple[str, str], position: int, write: Callable[[bytes], object]
) -> int:
    """Print a log object from ``position`` on; return its size (0 while there is none).

    The store opens it without following links, so a link planted in the logs bucket is
    reported, not read.
    """
    try:
        with local.store.open_object(*log) as (handle, _):
            handle.seek(position)
            while chunk := handle.read(LOG_CHUNK_BYTES):
                position += len(chunk)
                write(chunk)
    except ObjectNotFoundError:
        return 0
    except StorageError as error:
        raise Exit(EXIT_FAILED, f"cannot read the log of the job: {error}") from error
    sys.stdout.flush()
    return position


@jobs_app.command("stop")
def jobs_stop(
    ctx: typer.Context,
    job_name: Annotated[str, typer.Argument(help="Job name")],
    wait: Annotated[bool, typer.Option(help="Wait until the job has stopped")] = True,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the job name, its status and whether a stop was sent"),
    ] = False,
    target: TargetOption = Target.LOCAL,
) -> None:
    """Stop a running job (locally its processes get SIGTERM, then SIGKILL)."""
    _check_job_name(job_name)
    view = _open_view(ctx.obj, target)
    record = view.refresh(job_name) if isinstance(view, LocalApp) else view.view(job_name)
    if record.status.is_terminal:
        if as_json:
            _out(json.dumps({"job_name": job_name, "status": record.status.value, "stop": False}))
        else:
            _out(f"{job_name} already ended: {record.status}")
        return
    if isinstance(view, LocalApp):
        view.runner.stop(job_name)
    else:
        view.backend.stop(job_name)
    if not as_json:
        _err(f"stop requested for {job_name}")
    if wait:
        with console.WaitStatus(console.stderr_line(quiet=as_json), [job_name]) as status:
            (record,) = view.wait([job_name], on_poll=status.update)
    if as_json:
        _out(json.dumps({"job_name": job_name, "status": record.status.value, "stop": True}))
    elif wait:
        _out(f"{job_name} {record.status}")


def _aws_logs(view: AwsApp, job_name: str, *, follow: bool) -> None:
    """Print a job's CloudWatch log lines; with ``follow``, poll until the job has ended."""
    from prepflow.aws.app import POLL_SECONDS

    view.jobs.get(job_name)
    from prepflow.aws.logs import LOG_GROUP

    printed = 0
    while True:
        ended = view.view(job_name).status.is_terminal
        lines = list(view.log_lines(job_name))
        for line in lines[printed:]:
            _out(line.rstrip("\n"))
        printed = len(lines)
        if not follow or ended:
            if not printed:
                _err(f"no log found for {job_name} in CloudWatch Logs group {LOG_GROUP}")
            return
        time.sleep(POLL_SECONDS)


# -- synth --------------------------------------------------------------------------------------


@app.command()
def synth(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", help="Environment: dev, staging or prod")] = "dev",
    output: Annotated[
        Path, typer.Option(help="Folder for the cloud assembly (templates and assets)")
    ] = Path("cdk.out"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the template's path as JSON")
    ] = False,
) -> None:
    """Synthesize the AWS CDK app offline and write its CloudFormation template."""
    _setup(ctx.obj)
    # The CDK app lives next to the package in a source checkout (infra/), not in a wheel.
    root = Path(__file__).resolve().parents[2]
    if not (root / "infra" / "synth.py").is_file():
        raise Exit(
            EXIT_USAGE,
            f"prepflow synth needs a source checkout with infra/ next to src/ (looked in {root})",
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from infra.synth import synth as synthesize
    except ImportError as error:
        raise Exit(
            EXIT_USAGE,
            f"the CDK libraries are not installed ({error}); run pip install -e '.[infra]'",
        ) from error
    template = synthesize(env, output)
    _out(json.dumps({"template": str(template)}) if as_json else str(template))


# -- deploy and destroy -------------------------------------------------------------------------

DeployEnvOption = Annotated[str, typer.Option("--env", help="Environment: dev, staging or prod")]
DeployPrefixOption = Annotated[
    str | None,
    typer.Option(
        "--app-prefix",
        help="Stack name and prefix of every resource name. Default: the global --app-prefix, "
        "else the environment's own (prepflow-dev for dev)",
    ),
]


@app.command()
def deploy(
    ctx: typer.Context,
    env: DeployEnvOption = "dev",
    app_prefix: DeployPrefixOption = None,
    alarm_email: Annotated[
        str | None, typer.Option(help="E-mail address subscribed to the job notifications")
    ] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", help="Deploy IAM and security changes without CDK's approval prompt"),
    ] = False,
) -> None:
    """Deploy the stack with the AWS CDK command line (needs Node.js, Docker and credentials)."""
    from prepflow import deploy as cdk

    project, _, config = _prepare_deployment(
        ctx.obj, env, app_prefix, alarm_email=alarm_email, needs_docker=True
    )
    _ensure_cdk_cli(project)
    _run_cdk(project, cdk.cdk_command(project, "deploy", config, approve=yes))


@app.command()
def destroy(
    ctx: typer.Context,
    env: DeployEnvOption = "dev",
    app_prefix: DeployPrefixOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Destroy without asking for confirmation")
    ] = False,
) -> None:
    """Delete the stack, after stopping its jobs and emptying its buckets unless it keeps data."""
    from prepflow import deploy as cdk
    from prepflow.aws.clients import AwsClients

    project, session, config = _prepare_deployment(
        ctx.obj, env, app_prefix, alarm_email=None, needs_docker=False
    )
    _confirm_destroy(config, session.region_name, yes=yes)
    # The CDK command line is installed before anything is deleted, so a failed install
    # leaves the deployment whole.
    _ensure_cdk_cli(project)

    clients = AwsClients(session)
    jobs = cdk.stop_jobs(clients, config)
    for job_name in jobs.stopped:
        _err(f"stop requested for processing job {job_name}")
    for job_name, reason in jobs.not_stopped.items():
        _err(f"processing job {job_name} not stopped (already stopping or ended): {reason}")
    if config.retain_data:
        _err(f"{config.environment} keeps its data: these stay after the stack is deleted")
        for resource in cdk.kept_resources(config):
            _err(f"  kept: {resource}")
    else:
        for bucket, deleted in cdk.empty_buckets(clients, config).items():
            result = "not found" if deleted is None else f"{deleted} object versions deleted"
            _err(f"emptied bucket {bucket}: {result}")
    _run_cdk(project, cdk.cdk_command(project, "destroy", config))


def _prepare_deployment(
    context: Context,
    env: str,
    app_prefix: str | None,
    *,
    alarm_email: str | None,
    needs_docker: bool,
) -> tuple[CdkProject, boto3.session.Session, DeploymentConfig]:
    """Check the prerequisites of deploy or destroy, then load the environment's configuration.

    The checks run before the configuration, so a missing tool is reported first.
    """
    from prepflow import deploy as cdk

    _setup(context, default_level="INFO")
    project = cdk.find_project(_checkout_root())
    cdk.check_node()
    if needs_docker:
        cdk.check_docker()
    session = cdk.aws_session()
    prefix = app_prefix or context.overrides.get("app_prefix")
    config = cdk.load_config(project, env, app_prefix=prefix, alarm_email=alarm_email)
    return project, session, config


def _checkout_root() -> Path:
    """Return the folder above src/, which contains infra/ in a source checkout."""
    return Path(__file__).resolve().parents[2]


def _confirm_destroy(config: DeploymentConfig, region: str, *, yes: bool) -> None:
    if yes:
        return
    stack = f"stack {config.app_prefix} ({config.environment}) in {region}"
    if not sys.stdin.isatty():
        raise Exit(
            EXIT_USAGE,
            f"prepflow destroy deletes {stack} and asks for confirmation, but stdin is not a "
            "terminal; pass --yes to destroy without confirmation",
        )
    data = "keeping its buckets and table" if config.retain_data else "emptying its buckets"
    if not typer.confirm(f"Delete {stack}, {data}?", default=False):
        raise Exit(EXIT_FAILED, "destroy cancelled: nothing was changed")


def _ensure_cdk_cli(project: CdkProject) -> None:
    from prepflow import deploy as cdk

    if not project.cli_installed:
        _err(f"node_modules lacks the AWS CDK command line: running npm ci in {project.root}")
        cdk.install_cli(project)


def _run_cdk(project: CdkProject, command: list[str]) -> None:
    from prepflow import deploy as cdk

    _err("running: " + " ".join(command))
    code = cdk.run_cdk(project, command)
    if code != 0:
        raise Exit(EXIT_FAILED, f"{' '.join(command[2:4])} failed with exit code {code}")


# -- doctor -------------------------------------------------------------------------------------


@app.command()
def doctor(
    ctx: typer.Context,
    target: TargetOption = Target.LOCAL,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON")] = False,
) -> None:
    """Check that prepflow can run here (or that a deployment can), and how to fix it."""
    settings = _setup(ctx.obj)
    if target != Target.AWS:
        _local_doctor(settings, as_json=as_json)
    from prepflow.aws.clients import aws_clients
    from prepflow.aws.doctor import check_deployment

    checks = check_deployment(settings, aws_clients(settings).client)
    if as_json:
        _out(json.dumps([vars(check) for check in checks], indent=2))
    else:
        marks = {"ok": "ok  ", "problem": "FAIL", "skipped": "skip"}
        for check in checks:
            _out(f"{marks[check.status]}  {check.name}: {check.detail}")
            if check.fix:
                _out(f"      fix: {check.fix}")
    raise Exit(EXIT_FAILED if any(c.status == "problem" for c in checks) else EXIT_OK)


def _local_doctor(settings: Settings, *, as_json: bool) -> None:
    """Print the local checks; exit with 1 when a required one failed."""
    from prepflow.doctor import check_local

    checks = check_local(settings)
    if as_json:
        _out(json.dumps([check.as_json() for check in checks], indent=2))
    else:
        colour = console.colour_enabled(sys.stdout)
        for check in checks:
            if check.ok:
                mark = console.paint("ok  ", "green", enabled=colour)
            elif check.required:
                mark = console.paint("FAIL", "red", enabled=colour)
            else:
                mark = console.paint("warn", "yellow", enabled=colour)
            _out(f"{mark}  {check.check}: {check.detail}")
            if not check.ok:
                _out(f"      fix: {check.fix}")
    failed = any(check.required and not check.ok for check in checks)
    raise Exit(EXIT_FAILED if failed else EXIT_OK)


# -- init ---------------------------------------------------------------------------------------


@app.command()
def init(
    folder: Annotated[
        Path, typer.Argument(help="Folder to write the files into (created if missing)")
    ] = Path("."),
    force: Annotated[bool, typer.Option(help="Replace files that exist already")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the written files and next command as JSON")
    ] = False,
) -> None:
    """Write a starter recipe, an example script and sample data to try them on."""
    from prepflow.starter import write_starter

    written = write_starter(folder, force=force)
    recipe, script, data = (_shown_path(path) for path in written)
    next_command = f"prepflow run --recipe {recipe} {data}"
    if as_json:
        files = [str(path) for path in written]
        _out(json.dumps({"files": files, "next": next_command}, indent=2))
        return
    for path in written:
        _out(f"wrote {_shown_path(path)}")
    _out("")
    _out(f"next, run the built-in step with the recipe:  {next_command}")
    _out(f"or run the example script instead:  prepflow run --script {script} {data}")


def _shown_path(path: Path) -> str:
    """Return ``path`` as a person would type it from the current folder."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# -- ui -----------------------------------------------------------------------------------------


@app.command()
def ui(
    ctx: typer.Context,
    port: Annotated[
        int,
        typer.Option(help="TCP port to listen on; 0 picks a free one", min=0, max=65535),
    ] = 8765,
    host: Annotated[
        str,
        typer.Option(help="Loopback address to listen on; other addresses are rejected"),
    ] = "127.0.0.1",
) -> None:
    """Serve a read-only dashboard of the local jobs; prints its URL, stops on Ctrl-C."""
    from prepflow.ui.api import Dashboard
    from prepflow.ui.server import check_host, serve

    check_host(host)
    local = _existing_app(ctx.obj)

    def announce(url: str) -> None:
        _out(f"dashboard: {url}")
        sys.stdout.flush()

    serve(Dashboard(local), host=host, port=port, announce=announce)


# -- shared -------------------------------------------------------------------------------------


def _open_view(context: Context, target: Target) -> LocalApp | AwsApp:
    if target == Target.AWS:
        from prepflow.aws.app import build_aws_app

        return build_aws_app(_setup(context))
    return _existing_app(context)


def _existing_app(context: Context) -> LocalApp:
    """Open the local mode for reading; fail instead of creating an empty home."""
    settings = _setup(context)
    if not _is_home(settings):
        raise Exit(
            EXIT_NOT_FOUND,
            f"no prepflow home at {settings.home.resolve()}: nothing has run there; set --home "
            "or PREPFLOW_HOME to the folder your jobs ran in",
        )
    return build_local_app(settings)


def _check_job_name(job_name: str) -> None:
    if not JOB_NAME_PATTERN.match(job_name):
        raise Exit(
            EXIT_USAGE,
            f"invalid job name {job_name!r}: a job name is 1 to 63 letters, digits or "
            "hyphens; run 'prepflow jobs list' to see job names",
        )


def _is_home(settings: Settings) -> bool:
    return (settings.home / "jobs.db").is_file()


def _setup(context: Context, *, default_level: str = "WARNING", **overrides: Any) -> Settings:
    settings = context.settings(**overrides)
    level = (context.log_level or os.environ.get("LOG_LEVEL") or default_level).upper()
    if level not in LOG_LEVELS:
        raise Exit(EXIT_USAGE, f"--log-level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings


def _finish(
    local: LocalApp,
    outcomes: list[Outcome],
    *,
    wait: bool,
    as_json: bool,
    timeout: float | None,
    skip_fails: bool = False,
) -> None:
    """Report what the trigger did, wait for its jobs if asked, and exit with the right code.

    With ``skip_fails``, a skipped input counts as a failure: ``run`` was asked to process it.
    """
    for outcome in outcomes:
        if outcome.kind in (OutcomeKind.SKIPPED, OutcomeKind.FAILED):
            _err(f"{outcome.kind.value}: {outcome.subject}: {outcome.reason}")
        elif outcome.kind == OutcomeKind.DUPLICATE:
            # A repeated delivery starts nothing, so name the job the event already has.
            _err(f"duplicate: {outcome.subject}: job {outcome.job_name} ({outcome.reason})")
    failing = {OutcomeKind.FAILED, OutcomeKind.SKIPPED} if skip_fails else {OutcomeKind.FAILED}
    problems = [o for o in outcomes if o.kind in failing]
    names = list(dict.fromkeys(o.job_name for o in outcomes if o.job_name))
    try:
        with console.WaitStatus(console.stderr_line(quiet=as_json or not wait), names) as status:
            records = (
                local.wait(names, timeout=timeout, on_poll=status.update)
                if wait
                else [local.jobs.get(n) for n in names]
            )
    except TimeoutError as error:
        raise Exit(EXIT_FAILED, f"{error}; they keep running: see 'prepflow jobs list'") from error
    _show_jobs(local, records, as_json=as_json)
    unfinished = [r for r in records if wait and r.status != JobStatus.COMPLETED]
    raise Exit(EXIT_FAILED if problems or unfinished else EXIT_OK)


def _show_jobs(view: LocalApp | AwsApp, records: list[JobRecord], *, as_json: bool) -> None:
    if as_json:
        _out(json.dumps([job_summary(view, r) for r in records], indent=2))
        return
    for record in records:
        _print_job(view, record)


def _print_job(local: LocalApp | AwsApp, record: JobRecord) -> None:
    status = console.paint(
        record.status.value,
        console.STATUS_COLOURS.get(record.status.value),
        enabled=console.colour_enabled(sys.stdout),
    )
    _out(
        f"{record.job_name}  {status}  {_seconds(record.duration_s)}  "
        f"rows in {_count(record.rows_in)}, out {_count(record.rows_out)}, "
        f"rejected {_count(record.rows_rejected)}"
    )
    for uri in record.inputs:
        _out(f"  input:  {uri}")
    if record.status == JobStatus.COMPLETED:
        outputs = local.output_files(record)
        for uri in outputs:
            _out(f"  output: {uri}")
            if isinstance(local, LocalApp):
                _out(f"          {local.local_path(uri)}")
        if not outputs:
            _out("  output: none (the job wrote no files)")
    elif record.status.is_terminal:
        _out("  output: none (outputs are uploaded only when a job completes)")
    side_outputs = (
        ("rejected", REJECTED_FILE),
        ("report", REPORT_HTML),
        ("artifacts", ARTIFACTS_FILE),
    )
    for output_name, file_name in side_outputs:
        found = side_output(local, record, output_name, file_name)
        if found is not None:
            _out(f"  {output_name + ':':<9} {found.get('path', found['uri'])}")
    if record.failure_reason:
        _out("  reason: " + record.failure_reason.replace("\n", "\n          "))
    if record.waiting_reason and not record.status.is_terminal:
        _out(f"  note:   {record.waiting_reason}")


def _supported(path: Path, settings: Settings) -> bool:
    return path.name.lower().endswith(settings.input_suffixes)


def _suffixes(settings: Settings) -> str:
    return ", ".join(settings.input_suffixes)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _out(text: str) -> None:
    print(text)


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def main() -> None:
    """Console entry point; ``_PrepflowGroup`` turns prepflow's errors into exit codes."""
    app()
