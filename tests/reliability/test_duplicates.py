"""One trigger event delivered many times, also from several processes at once: one job."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prepflow.jobs.spec import JobStatus
from tests.reliability.pipeline import (
    job_folders,
    job_records,
    output_folder,
    prepflow_env,
    running_watch,
    wait_for_terminal_jobs,
)

DELIVERIES = 5
# Idle, the whole test takes a few seconds; the margin covers a loaded CI machine.
DEADLINE_SECONDS = 180


def put_and_capture(app, key, body=b"id,value\n1,a\n2,\n"):
    """Put an object in the raw bucket and return the S3 notification the store sent for it."""
    sent = []
    app.store.subscribe(app.settings.buckets.raw, sent.append)
    app.store.put_object(app.settings.buckets.raw, key, body)
    (notification,) = sent
    return notification


def started_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "prepflow.orchestrator: started job" in line]


def test_event_five_times_in_one_invoke(make_app, cli, home, figures):
    app = make_app()
    event = put_and_capture(app, "input/orders.csv")

    result = cli("--log-level", "INFO", "invoke", json.dumps([event] * DELIVERIES), "--json")

    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)
    assert job["status"] == "Completed"
    assert len(started_lines(result.stderr)) == 1
    duplicates = result.stderr.count(f"job {job['job_name']} exists")
    assert duplicates == DELIVERIES - 1
    records = job_records(home)
    assert [r.job_name for r in records] == [job["job_name"]]
    assert job_folders(home) == [job["job_name"]]
    outputs = sorted(p.name for p in output_folder(home, job["job_name"]).iterdir())
    assert outputs == ["processed_orders.csv"]
    figures.record(
        "same S3 notification delivered 5 times in a row to one `invoke`",
        DELIVERIES,
        f"{len(records)} job, {len(outputs)} output file, "
        f"{duplicates} deliveries answered with the existing job",
    )


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_event_from_invoke_and_watch_at_once(make_app, home, figures):
    app = make_app()
    event = json.dumps(put_and_capture(app, "input/orders.csv"))
    environment = prepflow_env(home, LOG_LEVEL="INFO")

    with running_watch(home, "--interval", "0.1", "--settle", "0") as watch:
        invokes = [
            subprocess.Popen(
                [sys.executable, "-m", "prepflow", "invoke", event, "--no-wait", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            )
            for _ in range(DELIVERIES)
        ]
        outputs = [process.communicate(timeout=DEADLINE_SECONDS) for process in invokes]
        (record,) = wait_for_terminal_jobs(home, 1, timeout=DEADLINE_SECONDS)
    watch_log = watch.log()

    assert [process.returncode for process in invokes] == [0] * DELIVERIES, outputs
    reported = [[job["job_name"] for job in json.loads(stdout)] for stdout, _ in outputs]
    assert reported == [[record.job_name]] * DELIVERIES
    assert record.status == JobStatus.COMPLETED
    assert len(job_records(home)) == 1
    assert job_folders(home) == [record.job_name]
    starts = started_lines(watch_log) + [
        line for _, stderr in outputs for line in started_lines(stderr)
    ]
    assert len(starts) == 1, starts
    written = sorted(p.name for p in output_folder(home, record.job_name).iterdir())
    assert written == ["processed_orders.csv"]
    figures.record(
        "same S3 notification from 5 `invoke` processes while `watch` scans the same file",
        DELIVERIES + 1,
        f"{len(job_records(home))} job, {len(written)} output file, every `invoke` "
        "reported that job",
    )
