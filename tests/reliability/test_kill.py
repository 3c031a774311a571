"""`kill -9` of `watch`, of a job's runner and of a job's own process, while files keep arriving.

Each job runs CHECKPOINT_SCRIPT, which stops at named points of its life while the test holds
a file there, so every kill lands at a known point without a timed sleep. Afterwards every
file has exactly one Completed job, its output appears once and whole, and each job that lost
its runner or its process is Failed with a reason that says so and was re-driven as a new job.
A thread lists the processed-data folder every few milliseconds during the whole run and
records any output folder it ever sees incomplete.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prepflow.jobs.spec import (
    AppSpecification,
    ClusterConfig,
    JobStatus,
    ProcessingInput,
    ProcessingJobSpec,
    ProcessingOutput,
    ProcessingOutputConfig,
    ProcessingResources,
    S3Input,
    S3Output,
    StoppingCondition,
)
from prepflow.jobs.template import renamed_spec
from prepflow.jobstore.base import JobRecord
from prepflow.naming import attempt_key, first_attempt_key
from tests.helpers import wait_until
from tests.reliability.pipeline import (
    PROCESSED,
    RAW,
    WatchProcess,
    job_records,
    job_status,
    raw_folder,
    start_watch,
    stop_watch,
)

# Idle, each test takes 10 to 20 s, most of it starting one supervisor per job. Every wait
# gets this deadline, which also covers a job whose submitter died before starting its
# supervisor (the runner waits 60 s for it before failing the job).
DEADLINE_SECONDS = 300
OUTPUT_FILES = ("copy.csv", "rows.json")
ROWS_PER_FILE = 300

# Copies its one input to copy.csv in two halves and writes rows.json, stopping at each
# checkpoint while the test holds the input there ("hold.<input>.<point>" exists). It records
# each checkpoint it reaches as "reached.<input>.<point>.<job>", holding its pid, and kills
# itself there with SIGKILL while "crash.<input>.<point>" exists. With
# "freeze.<input>" present it stops its runner (SIGSTOP) after writing everything, so the
# runner is frozen between the command's end and the publishing of outputs. It finds its
# folders below PREPFLOW_ML_ROOT, so it runs with PREPFLOW_ISOLATION=none.
CHECKPOINT_SCRIPT = """\
import json, os, signal, time
from pathlib import Path

control = Path({control!r})
root = Path(os.environ["PREPFLOW_ML_ROOT"])
config = json.loads((root / "config" / "processingjobconfig.json").read_text())
job = config["ProcessingJobName"]
(source,) = sorted((root / "processing" / "input").glob("*.csv"))


def checkpoint(point):
    (control / f"reached.{{source.name}}.{{point}}.{{job}}").write_text(str(os.getpid()))
    if (control / f"crash.{{source.name}}.{{point}}").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    hold = control / f"hold.{{source.name}}.{{point}}"
    while hold.exists():
        time.sleep(0.01)


checkpoint("reading")
lines = source.read_bytes().splitlines(keepends=True)
output = root / "processing" / "output"
output.mkdir(parents=True, exist_ok=True)
with open(output / "copy.csv", "wb") as copy:
    copy.writelines(lines[: len(lines) // 2])
    copy.flush()
    checkpoint("writing")
    copy.writelines(lines[len(lines) // 2 :])
(output / "rows.json").write_text(json.dumps({{"lines": len(lines)}}))
checkpoint("publish")
if (control / f"freeze.{{source.name}}").exists():
    os.kill(os.getppid(), signal.SIGSTOP)
    (control / f"frozen.{{source.name}}.{{job}}").write_text(str(os.getppid()))
"""


@dataclass
class Pipeline:
    """A watched home, the control folder of CHECKPOINT_SCRIPT and the inputs dropped so far."""

    home: Path
    control: Path
    staging: Path
    script: Path
    inputs: dict[str, bytes] = field(default_factory=dict)

    def start_watch(self, **variables: str) -> WatchProcess:
        environment = {"PREPFLOW_ISOLATION": "none", "PREPFLOW_MAX_CONCURRENT_JOBS": "1"}
        environment.update(variables)
        return start_watch(
            self.home,
            "--interval",
            "0.1",
            "--settle",
            "0",
            "--script",
            str(self.script),
            env=environment,
        )

    def watch_once(self) -> int:
        """Run `watch --once` to its end and return its exit code."""
        watch = start_watch(
            self.home,
            "--once",
            "--settle",
            "0",
            "--script",
            str(self.script),
            env={"PREPFLOW_ISOLATION": "none"},
        )
        return watch.process.wait(timeout=DEADLINE_SECONDS)

    def drop(self, name: str) -> None:
        """Write an input elsewhere and rename it into the watched folder, so it arrives whole."""
        rows = [f"{name},{number},value {number}\n" for number in range(ROWS_PER_FILE)]
        content = ("file,id,value\n" + "".join(rows)).encode()
        (self.staging / name).write_bytes(content)
        os.rename(self.staging / name, raw_folder(self.home) / name)
        self.inputs[name] = content

    def hold(self, name: str, point: str) -> Path:
        hold = self.control / f"hold.{name}.{point}"
        hold.touch()
        return hold

    def reached(self, name: str, point: str) -> tuple[str, int]:
        """Wait until the first job of ``name`` reaches ``point``; return its name and pid."""
        marker = wait_until(
            lambda: sorted(self.control.glob(f"reached.{name}.{point}.*")),
            timeout=DEADLINE_SECONDS,
            description=f"a job of {name} to reach {point}",
        )[0]
        return marker.name.rsplit(".", 1)[1], int(marker.read_text())

    def first_job(self, name: str) -> JobRecord:
        uri = f"s3://{RAW}/input/{name}"
        record: JobRecord = wait_until(
            lambda: next(
                (r for r in job_records(self.home) if r.inputs == [uri] and r.attempt == 1), None
            ),
            timeout=DEADLINE_SECONDS,
            description=f"the job of {name}",
        )
        return record

    def runner_pid(self, job_name: str) -> int:
        status = wait_until(
            lambda: job_status(self.home, job_name).get("supervisor_pid"),
            timeout=DEADLINE_SECONDS,
            description=f"the runner of {job_name} to record its pid",
        )
        return int(status)

    def wait_until_done(self) -> list[JobRecord]:
        """Wait until every input has a Completed job and no job is running; return all jobs."""

        def done() -> list[JobRecord] | None:
            records = job_records(self.home)
            completed = {
                uri for r in records if r.status == JobStatus.COMPLETED for uri in r.inputs
            }
            expected = {f"s3://{RAW}/input/{name}" for name in self.inputs}
            if completed == expected and all(r.status.is_terminal for r in records):
                return records
            return None

        try:
            records: list[JobRecord] = wait_until(
                done, timeout=DEADLINE_SECONDS, description="a Completed job for every input"
            )
        except pytest.fail.Exception:
            # Name what was missing, so a failure under load can be distinguished from a lost file.
            states = [
                (r.job_name, r.status, r.inputs, r.failure_reason) for r in job_records(self.home)
            ]
            pytest.fail(f"not every input has a Completed job after {DEADLINE_SECONDS} s: {states}")
        return records


@pytest.fixture
def pipeline(home: Path, tmp_path: Path) -> Pipeline:
    control = tmp_path / "control"
    staging = tmp_path / "staging"
    for folder in (control, staging, raw_folder(home)):
        folder.mkdir(parents=True)
    script = tmp_path / "checkpoints.py"
    script.write_text(CHECKPOINT_SCRIPT.format(control=str(control)))
    return Pipeline(home=home, control=control, staging=staging, script=script)


@dataclass
class OutputObserver:
    """Lists the processed-data output folder in a loop; keeps every incomplete view it saw."""

    root: Path
    inputs: dict[str, bytes]
    problems: list[str] = field(default_factory=list)
    listings: int = 0

    def check_once(self) -> None:
        try:
            folders = os.listdir(self.root)
        except FileNotFoundError:
            return
        self.listings += 1
        for job_name in folders:
            try:
                self._check_folder(self.root / job_name)
            except OSError as error:
                self.problems.append(f"{job_name}: cannot read: {error}")

    def _check_folder(self, folder: Path) -> None:
        names = sorted(os.listdir(folder))
        if names != sorted(OUTPUT_FILES):
            self.problems.append(f"{folder.name} holds {names}, expected {list(OUTPUT_FILES)}")
            return
        copy = (folder / "copy.csv").read_bytes()
        # The first field of each data row is the input's name.
        source = copy.split(b"\n", 2)[1].split(b",", 1)[0].decode()
        if copy != self.inputs.get(source):
            self.problems.append(f"{folder.name}/copy.csv differs from input {source!r}")
        lines = json.loads((folder / "rows.json").read_text())["lines"]
        if lines != ROWS_PER_FILE + 1:
            self.problems.append(f"{folder.name}/rows.json counts {lines} lines")


@contextmanager
def observing_outputs(pipeline: Pipeline) -> Iterator[OutputObserver]:
    """Run an OutputObserver on a thread for the block, listing about every 5 ms."""
    observer = OutputObserver(pipeline.home / "buckets" / PROCESSED / "output", pipeline.inputs)
    stop = threading.Event()

    def observe() -> None:
        while not stop.wait(0.005):
            observer.check_once()

    thread = threading.Thread(target=observe, daemon=True)
    thread.start()
    try:
        yield observer
    finally:
        stop.set()
        thread.join(timeout=30)
    observer.check_once()


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def process_state(pid: int) -> str:
    """Return the state letter of a process from /proc ("T" for stopped), or "" when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def check_exactly_once(pipeline: Pipeline, records: list[JobRecord]) -> list[JobRecord]:
    """Assert one Completed job per input and its outputs alone in the bucket; return those."""
    completed = [r for r in records if r.status == JobStatus.COMPLETED]
    completed_inputs = sorted(uri for r in completed for uri in r.inputs)
    assert completed_inputs == sorted(f"s3://{RAW}/input/{name}" for name in pipeline.inputs)
    output_root = pipeline.home / "buckets" / PROCESSED / "output"
    assert sorted(os.listdir(output_root)) == sorted(r.job_name for r in completed)
    for record in completed:
        (uri,) = record.inputs
        copy = output_root / record.job_name / "copy.csv"
        assert copy.read_bytes() == pipeline.inputs[uri.rsplit("/", 1)[1]]
    return completed


def check_redriven(
    records: list[JobRecord], failed_name: str, reason_start: str
) -> tuple[JobRecord, JobRecord]:
    """Assert the job failed with a reason that starts with ``reason_start`` and was re-driven."""
    by_name = {r.job_name: r for r in records}
    failed = by_name[failed_name]
    assert failed.status == JobStatus.FAILED
    assert failed.failure_reason is not None
    assert failed.failure_reason.startswith(reason_start), failed.failure_reason
    (retry,) = [r for r in records if r.retry_of == failed_name]
    assert retry.attempt == failed.attempt + 1
    assert retry.inputs == failed.inputs
    assert retry.job_name != failed_name
    return failed, retry


def runner_died_reason(pid: int) -> str:
    return f"InternalServerError: the local runner process (pid {pid}) ended without recording"


@pytest.mark.timeout(4 * DEADLINE_SECONDS)
def test_runner_killed_at_each_point(pipeline, figures):
    watch = pipeline.start_watch()
    killed: dict[str, tuple[str, int]] = {}
    try:
        with observing_outputs(pipeline) as observer:
            # While reading: the job has the only slot, so the next one waits to start.
            reading_hold = pipeline.hold("reading.csv", "reading")
            pipeline.drop("reading.csv")
            reading_job, _ = pipeline.reached("reading.csv", "reading")
            pipeline.drop("before-start.csv")
            waiting = pipeline.first_job("before-start.csv")
            wait_until(
                lambda: any(
                    r.job_name == waiting.job_name and r.waiting_reason
                    for r in job_records(pipeline.home)
                ),
                timeout=DEADLINE_SECONDS,
                description="the second job to wait for a slot",
            )
            for name, job in (("before-start.csv", waiting.job_name), ("reading.csv", reading_job)):
                pid = pipeline.runner_pid(job)
                kill(pid)
                killed[name] = (job, pid)
            reading_hold.unlink()
            pipeline.drop("arrival-1.csv")

            writing_hold = pipeline.hold("writing.csv", "writing")
            pipeline.drop("writing.csv")
            writing_job, _ = pipeline.reached("writing.csv", "writing")
            pid = pipeline.runner_pid(writing_job)
            kill(pid)
            killed["writing.csv"] = (writing_job, pid)
            writing_hold.unlink()
            pipeline.drop("arrival-2.csv")

            # Just before publishing: the script has exited 0 and froze its runner first.
            freeze = pipeline.control / "freeze.publish.csv"
            freeze.touch()
            pipeline.drop("publish.csv")
            frozen = wait_until(
                lambda: sorted(pipeline.control.glob("frozen.publish.csv.*")),
                timeout=DEADLINE_SECONDS,
                description="the runner of publish.csv to be frozen",
            )[0]
            pid = int(frozen.read_text())
            wait_until(
                lambda: process_state(pid) == "T",
                timeout=DEADLINE_SECONDS,
                description="the runner to stop",
            )
            # Removed first, so the job's next attempt cannot freeze its own runner.
            freeze.unlink()
            kill(pid)
            killed["publish.csv"] = (frozen.name.rsplit(".", 1)[1], pid)
            pipeline.drop("arrival-3.csv")

            records = pipeline.wait_until_done()
    finally:
        stop_watch(watch)

    assert observer.problems == []
    assert observer.listings > 0
    completed = check_exactly_once(pipeline, records)
    for job, pid in killed.values():
        check_redriven(records, job, runner_died_reason(pid))
    assert len(records) == len(pipeline.inputs) + len(killed)

    # A restarted watcher finds everything done and starts nothing.
    assert pipeline.watch_once() == 0
    assert len(job_records(pipeline.home)) == len(records)

    figures.record(
        "kill -9 of a job's runner: waiting for a slot, reading, writing output, after the "
        f"command's end before publishing, with {len(pipeline.inputs) - len(killed)} more "
        "files arriving",
        len(killed),
        f"{len(completed)} files, {len(completed)} Completed jobs, each output once; "
        f"{len(killed)} jobs Failed naming the dead runner's pid, each re-driven once; "
        f"no partial output in {observer.listings:,} listings",
    )


@pytest.mark.timeout(4 * DEADLINE_SECONDS)
def test_job_process_killed_at_each_point(pipeline, figures):
    watch = pipeline.start_watch()
    killed: dict[str, str] = {}
    try:
        with observing_outputs(pipeline) as observer:
            for point in ("reading", "writing", "publish"):
                name = f"{point}.csv"
                hold = pipeline.hold(name, point)
                pipeline.drop(name)
                job, pid = pipeline.reached(name, point)
                kill(pid)
                killed[name] = job
                hold.unlink()
                pipeline.drop(f"arrival-{point}.csv")
            records = pipeline.wait_until_done()
    finally:
        stop_watch(watch)

    assert observer.problems == []
    completed = check_exactly_once(pipeline, records)
    for job in killed.values():
        check_redriven(records, job, "AlgorithmError: killed by signal SIGKILL")
    assert len(records) == len(pipeline.inputs) + len(killed)

    figures.record(
        "kill -9 of a job's own process: reading, writing output, after writing all output, "
        f"with {len(pipeline.inputs) - len(killed)} more files arriving",
        len(killed),
        f"{len(completed)} files, {len(completed)} Completed jobs, each output once; "
        f"{len(killed)} jobs Failed as killed by SIGKILL, each re-driven once; "
        f"no partial output in {observer.listings:,} listings",
    )


@pytest.mark.timeout(4 * DEADLINE_SECONDS)
def test_watch_killed_and_restarted(pipeline, figures):
    watch_kills = 0
    with observing_outputs(pipeline) as observer:
        watch = pipeline.start_watch()
        try:
            reading_hold = pipeline.hold("reading.csv", "reading")
            pipeline.drop("reading.csv")
            orphan_job, _ = pipeline.reached("reading.csv", "reading")
            pipeline.drop("before-start.csv")
            waiting = pipeline.first_job("before-start.csv")
        finally:
            watch.process.kill()
            watch.process.wait()
        watch_kills += 1

        # With no watcher running, the runner of one job dies and more files arrive.
        orphan_pid = pipeline.runner_pid(orphan_job)
        kill(orphan_pid)
        reading_hold.unlink()
        pipeline.drop("while-down-1.csv")
        pipeline.drop("while-down-2.csv")

        watch = pipeline.start_watch()
        try:
            writing_hold = pipeline.hold("writing.csv", "writing")
            pipeline.drop("writing.csv")
            pipeline.reached("writing.csv", "writing")
        finally:
            watch.process.kill()
            watch.process.wait()
        watch_kills += 1
        writing_hold.unlink()

        # Killed once it has recorded the first job of a burst, wherever it is with the rest.
        watch = pipeline.start_watch()
        for number in range(4):
            pipeline.drop(f"burst-{number}.csv")
        pipeline.first_job("burst-0.csv")
        watch.process.kill()
        watch.process.wait()
        watch_kills += 1

        watch = pipeline.start_watch()
        try:
            records = pipeline.wait_until_done()
        finally:
            assert stop_watch(watch) == 0

    assert observer.problems == []
    completed = check_exactly_once(pipeline, records)
    check_redriven(records, orphan_job, runner_died_reason(orphan_pid))
    assert len(records) == len(pipeline.inputs) + 1
    waited = next(r for r in records if r.job_name == waiting.job_name)
    assert waited.status == JobStatus.COMPLETED

    figures.record(
        "kill -9 of `watch` with jobs reading, waiting for a slot, writing output and a burst "
        "of files arriving; one job's runner killed while no watcher ran",
        watch_kills,
        f"{len(completed)} files, {len(completed)} Completed jobs, each output once; "
        "the orphaned job found Failed on restart and re-driven once; "
        f"no partial output in {observer.listings:,} listings",
    )


@pytest.mark.timeout(4 * DEADLINE_SECONDS)
def test_redrives_stop_at_job_attempts(pipeline, figures):
    attempts = 2
    (pipeline.control / "crash.doomed.csv.reading").touch()
    watch = pipeline.start_watch(PREPFLOW_JOB_ATTEMPTS=str(attempts))
    try:
        pipeline.drop("doomed.csv")
        pipeline.drop("healthy.csv")
        wait_until(
            lambda: f"on attempt {attempts} of {attempts} (PREPFLOW_JOB_ATTEMPTS)" in watch.log(),
            timeout=DEADLINE_SECONDS,
            description="the watcher to give up on doomed.csv",
        )

        def ended() -> list[JobRecord] | None:
            # One job for healthy.csv and one per attempt for doomed.csv.
            found = job_records(pipeline.home)
            done = len(found) == attempts + 1 and all(r.status.is_terminal for r in found)
            return found if done else None

        records = wait_until(ended, timeout=DEADLINE_SECONDS, description="the jobs to end")
    finally:
        stop_watch(watch)

    (healthy,) = [r for r in records if r.inputs == [f"s3://{RAW}/input/healthy.csv"]]
    assert healthy.status == JobStatus.COMPLETED
    doomed = [r for r in records if r.inputs == [f"s3://{RAW}/input/doomed.csv"]]
    assert [r.attempt for r in doomed] == list(range(1, attempts + 1))
    assert [r.status for r in doomed] == [JobStatus.FAILED] * attempts
    assert doomed[1].retry_of == doomed[0].job_name
    for record in doomed:
        assert record.failure_reason is not None
        assert record.failure_reason.startswith("AlgorithmError: killed by signal SIGKILL")
    output_root = pipeline.home / "buckets" / PROCESSED / "output"
    assert not any((output_root / r.job_name).exists() for r in doomed)

    figures.record(
        f"a job's process killed on every attempt, PREPFLOW_JOB_ATTEMPTS={attempts}",
        attempts,
        f"{len(doomed)} jobs, each Failed as killed by SIGKILL, then no more attempts; "
        "no output published",
    )


def test_publish_shows_all_or_nothing(make_app):
    store = make_app().store
    folder = store.buckets_root / PROCESSED / "output" / "job-a"

    with pytest.raises(RuntimeError), store.publish(PROCESSED, "output/job-a/") as draft:
        (draft / "part-1.csv").write_text("1\n")
        raise RuntimeError("the runner failed between two files")
    assert not folder.exists()

    with store.publish(PROCESSED, "output/job-a/") as draft:
        (draft / "part-1.csv").write_text("1\n")
        (draft / "nested").mkdir()
        (draft / "nested" / "part-2.csv").write_text("2\n")
        assert not folder.exists()
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.csv")) == [
        "nested/part-2.csv",
        "part-1.csv",
    ]
    assert [info.key for info in store.list_objects(PROCESSED, "output/job-a/")] == [
        "output/job-a/nested/part-2.csv",
        "output/job-a/part-1.csv",
    ]
    assert list((store.home / "tmp").iterdir()) == []


def test_redriven_request_moves_named_outputs():
    manual_output = f"s3://{PROCESSED}/chosen/"
    spec = ProcessingJobSpec(
        processing_job_name="prepflow-a-111111111111",
        processing_inputs=[
            ProcessingInput(
                input_name="data",
                s3_input=S3Input(
                    s3_uri="s3://artifacts/manifests/prepflow-a-111111111111.manifest",
                    local_path="/opt/ml/processing/input",
                    s3_data_type="ManifestFile",
                ),
            )
        ],
        processing_output_config=ProcessingOutputConfig(
            outputs=[
                ProcessingOutput(
                    output_name=name,
                    s3_output=S3Output(s3_uri=uri, local_path=f"/opt/ml/processing/{name}"),
                )
                for name, uri in (
                    ("output", f"s3://{PROCESSED}/output/prepflow-a-111111111111/"),
                    ("chosen", manual_output),
                )
            ]
        ),
        processing_resources=ProcessingResources(
            cluster_config=ClusterConfig(
                instance_count=1, instance_type="ml.t3.medium", volume_size_in_gb=30
            )
        ),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=60),
        app_specification=AppSpecification(image_uri="image", container_entrypoint=["python3"]),
        role_arn="arn:aws:iam::000000000000:role/r",
    )

    renamed = renamed_spec(spec, "prepflow-a-222222222222", "s3://artifacts/manifests/new")

    assert renamed.name == "prepflow-a-222222222222"
    assert renamed.processing_inputs[0].s3_input.s3_uri == "s3://artifacts/manifests/new"
    assert [o.s3_output.s3_uri for o in renamed.processing_output_config.outputs] == [
        f"s3://{PROCESSED}/output/prepflow-a-222222222222/",
        manual_output,
    ]
    assert renamed.app_specification == spec.app_specification


@pytest.mark.parametrize("attempt", [1, 2, 7])
def test_attempt_key_gives_back_first_key(attempt):
    first = f"s3://{RAW}/input/a.csv#sequencer=0000000000000001"

    key = attempt_key(first, attempt)

    assert first_attempt_key(key, attempt) == first
    assert (key == first) == (attempt == 1)
