"""The ``prepflow`` command.

Exit codes: 0 every job completed; 1 a job failed or stopped, or a trigger record was
rejected (the reason is printed); 2 a usage or configuration error, before any work started.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prepflow.errors import ConfigurationError, IsolationError, PrepflowError
from prepflow.jobs import isolation
from prepflow.jobs.spec import JOB_NAME_PATTERN, JobStatus
from prepflow.jobs.template import StepTemplate, upload_recipe, upload_script
from prepflow.jobstore.base import JobRecord
from prepflow.local.app import LocalApp, build_local_app
from prepflow.orchestrator import Outcome, OutcomeKind, TriggerResult
from prepflow.processing.paths import ARTIFACTS_FILE, REJECTED_FILE, REPORT_HTML
from prepflow.settings import Settings, load_settings

if TYPE_CHECKING:
    from prepflow.aws.app import AwsApp

logger = logging.getLogger("prepflow.cli")

LOG_CHUNK_BYTES = 1 << 20
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

app = typer.Typer(
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


class Exit(Exception):
    """Leave the command with an exit code after printing ``message`` (if any) to stderr."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
        context, processing_instance_type=instance_type, max_runtime_seconds=max_runtime
    )
    if script is not None and recipe is not None:
        raise Exit(
            EXIT_USAGE,
            "--script and --recipe exclude each other: a recipe drives the built-in step",
        )
    uploads = _plan_uploads(paths, settings)
    if target == Target.AWS:
        if script is not None or recipe is not None or instance_type or max_runtime:
            raise Exit(
                EXIT_USAGE,
                "with --target aws the deployment's trigger starts the jobs with its own "
                "settings: drop --script, --recipe, --instance-type and --max-runtime, or "
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
    for path, key in uploads:
        uri = f"s3://{settings.buckets.raw}/{key}"
        try:
            local.store.upload_file(settings.buckets.raw, key, path)
        except PrepflowError as error:
            # One file the store cannot take must not stop the others.
            upload_failures.append(Outcome(OutcomeKind.FAILED, str(path), reason=str(error)))
            continue
        if not as_json:
            _err(f"uploaded {path} to {uri}")
    outcomes = upload_failures + [o for r in results for o in r.outcomes]
    _finish(local, outcomes, wait=wait, as_json=as_json, timeout=timeout, skip_fails=True)


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

    aws = build_aws_app(settings)
    # Fail before the upload when the job table is missing: on a deployment the upload alone
    # starts a job, which this command could then not follow.
    aws.jobs.list_jobs(limit=1)
    uploaded = []
    problems: list[str] = []
    for path, key in uploads:
        started = datetime.now(UTC)
        try:
            info = aws.store.upload_file(settings.buckets.raw, key, path)
        except PrepflowError as error:
            problems.append(f"failed: {path}: {error}")
            continue
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
        records = (
            aws.wait(names, timeout=remaining_timeout) if wait else [aws.view(n) for n in names]
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
    wait: Annotated[bool, typer.Option(help="Wait for the jobs to end")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for the jobs before giving up", min=0)
    ] = None,
) -> None:
    """Send one trigger event, or a manual request, to the orchestrator."""
    context: Context = ctx.obj
    payload = _invoke_payload(event, event_file, input_uri, output_uri)
    settings = _setup(context)
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
) -> None:
    """Process every file that appears under the raw-data bucket's input prefix."""
    from prepflow.local.watch import Watcher

    context: Context = ctx.obj
    settings = _setup(context, default_level="INFO")
    local = build_local_app(settings)
    if recipe is not None:
        local.orchestrator.step = upload_recipe(local.store, settings, recipe)
    watcher = Watcher(local, interval_seconds=interval, settle_seconds=settle)
    if once:
        results = watcher.scan_once()
        while watcher.unsettled:
            logger.info("waiting for %d file(s) that are still changing", watcher.unsettled)
            time.sleep(interval)
            results += watcher.scan_once()
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
        _out(
            f"no jobs: no prepflow home at {settings.home.resolve()} (set --home or PREPFLOW_HOME)"
        )
        return
    else:
        view = build_local_app(settings, check_runner=False)
        records = [
            view.refresh(r.job_name) for r in view.jobs.list_jobs(status=status, limit=limit)
        ]
    if as_json:
        _out(json.dumps([_job_json(view, r) for r in records], indent=2))
        return
    if not records:
        _out("no jobs")
        return
    rows = [("JOB NAME", "STATUS", "CREATED", "DURATION", "ROWS IN", "ROWS OUT", "INPUT")]
    for r in records:
        rows.append(
            (
                r.job_name,
                r.status.value,
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                _seconds(r.duration_s),
                _count(r.rows_in),
                _count(r.rows_out),
                r.inputs[0] + (f" (+{len(r.inputs) - 1})" if len(r.inputs) > 1 else "")
                if r.inputs
                else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _out(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
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
    details = {
        **_job_json(view, record),
        **record.model_dump(
            mode="json",
            include={
                "idempotency_key",
                "manifest_uri",
                "created_at",
                "started_at",
                "ended_at",
                "exit_message",
                "waiting_reason",
                "log_tail",
                "request",
            },
        ),
    }
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
    """Print a job's output (stdout and stderr of its container command)."""
    _check_job_name(job_name)
    if target == Target.AWS:
        from prepflow.aws.app import build_aws_app

        _aws_logs(build_aws_app(_setup(ctx.obj)), job_name, follow=follow)
        return
    local = _existing_app(ctx.obj)
    local.jobs.get(job_name)
    path = local.store.buckets_root / local.settings.buckets.logs / "logs" / job_name / "algo-1.log"
    position = 0
    while True:
        if path.is_file():
            with path.open("rb") as handle:
                handle.seek(position)
                while chunk := handle.read(LOG_CHUNK_BYTES):
                    position += len(chunk)
                    sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        if not follow or local.refresh(job_name).status.is_terminal:
            if follow and path.is_file() and path.stat().st_size > position:
                continue
            break
        time.sleep(0.25)


@jobs_app.command("stop")
def jobs_stop(
    ctx: typer.Context,
    job_name: Annotated[str, typer.Argument(help="Job name")],
    wait: Annotated[bool, typer.Option(help="Wait until the job has stopped")] = True,
    target: TargetOption = Target.LOCAL,
) -> None:
    """Stop a running job (locally its processes get SIGTERM, then SIGKILL)."""
    _check_job_name(job_name)
    view = _open_view(ctx.obj, target)
    record = view.refresh(job_name) if isinstance(view, LocalApp) else view.view(job_name)
    if record.status.is_terminal:
        _out(f"{job_name} already ended: {record.status}")
        return
    if isinstance(view, LocalApp):
        view.runner.stop(job_name)
    else:
        view.backend.stop(job_name)
    _err(f"stop requested for {job_name}")
    if wait:
        (record,) = view.wait([job_name])
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
    _out(str(template))


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
        raise Exit(
            EXIT_USAGE,
            "only 'prepflow doctor --target aws' exists so far; the local mode checks its "
            "prerequisites when a job starts",
        )
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
            EXIT_FAILED,
            f"no prepflow home at {settings.home.resolve()}: nothing has run there; set --home "
            "or PREPFLOW_HOME to the folder your jobs ran in",
        )
    return build_local_app(settings, check_runner=False)


def _check_job_name(job_name: str) -> None:
    if not JOB_NAME_PATTERN.match(job_name):
        raise Exit(
            EXIT_FAILED,
            f"processing job not found: {job_name!r} is not a valid job name (1 to 63 letters, "
            "digits or hyphens); run 'prepflow jobs list' to see job names",
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
    failing = {OutcomeKind.FAILED, OutcomeKind.SKIPPED} if skip_fails else {OutcomeKind.FAILED}
    problems = [o for o in outcomes if o.kind in failing]
    names = list(dict.fromkeys(o.job_name for o in outcomes if o.job_name))
    try:
        records = local.wait(names, timeout=timeout) if wait else [local.jobs.get(n) for n in names]
    except TimeoutError as error:
        raise Exit(EXIT_FAILED, f"{error}; they keep running: see 'prepflow jobs list'") from error
    _show_jobs(local, records, as_json=as_json)
    unfinished = [r for r in records if wait and r.status != JobStatus.COMPLETED]
    raise Exit(EXIT_FAILED if problems or unfinished else EXIT_OK)


def _show_jobs(view: LocalApp | AwsApp, records: list[JobRecord], *, as_json: bool) -> None:
    if as_json:
        _out(json.dumps([_job_json(view, r) for r in records], indent=2))
        return
    for record in records:
        _print_job(view, record)


def _print_job(local: LocalApp | AwsApp, record: JobRecord) -> None:
    _out(
        f"{record.job_name}  {record.status}  {_seconds(record.duration_s)}  "
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
        found = _side_output(local, record, output_name, file_name)
        if found is not None:
            _out(f"  {output_name + ':':<9} {found.get('path', found['uri'])}")
    if record.failure_reason:
        _out("  reason: " + record.failure_reason.replace("\n", "\n          "))
    if record.waiting_reason and not record.status.is_terminal:
        _out(f"  note:   {record.waiting_reason}")


def _job_json(local: LocalApp | AwsApp, record: JobRecord) -> dict[str, Any]:
    return {
        "job_name": record.job_name,
        "status": record.status.value,
        "inputs": record.inputs,
        "outputs": local.output_files(record),
        "failure_reason": record.failure_reason,
        "rows_in": record.rows_in,
        "rows_out": record.rows_out,
        "rows_rejected": record.rows_rejected,
        "rejected": _side_output(local, record, "rejected", REJECTED_FILE),
        "report": _side_output(local, record, "report", REPORT_HTML),
        "artifacts": _side_output(local, record, "artifacts", ARTIFACTS_FILE),
        "duration_s": record.duration_s,
        "log_uri": record.log_uri,
    }


def _side_output(
    local: LocalApp | AwsApp, record: JobRecord, output_name: str, file_name: str
) -> dict[str, str] | None:
    """Return the URI (and local path) of a file in one of the built-in step's side outputs."""
    if not isinstance(local, LocalApp):
        return local.side_output(record, output_name, file_name) or None
    if record.status != JobStatus.COMPLETED:
        return None
    outputs = record.request.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for output in outputs:
        if output.get("OutputName") == output_name:
            uri = output["S3Output"]["S3Uri"].rstrip("/") + "/" + file_name
            path = local.local_path(uri)
            if path.is_file():
                return {"uri": uri, "path": str(path)}
    return None


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
    """Console entry point: run the app and turn prepflow's errors into exit codes.

    Typer's standalone mode prints usage errors and exits with 2 itself; prepflow's own
    errors come through here.
    """
    try:
        app()
    except Exit as done:
        if done.message:
            _err(("error: " if done.code else "") + done.message)
        sys.exit(done.code)
    except ConfigurationError as error:
        _err(f"error: {error}")
        sys.exit(EXIT_USAGE)
    except PrepflowError as error:
        _err(f"error: {error}")
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        _err("interrupted; jobs already started keep running (see 'prepflow jobs list')")
        sys.exit(130)
