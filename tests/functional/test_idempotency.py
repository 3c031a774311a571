"""At most one job per idempotency key, however often and from wherever an event arrives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from prepflow.jobs.spec import JobStatus
from prepflow.orchestrator import OutcomeKind


def captured_notification(app, key, body=b"id,value\n1,a\n2,\n"):
    """Put an object with a subscriber attached and return the S3 notification it sent."""
    seen = []
    app.store.subscribe(app.settings.buckets.raw, seen.append)
    app.store.put_object(app.settings.buckets.raw, key, body)
    (notification,) = seen
    return notification


def test_event_five_times_one_job(make_app):
    app = make_app()
    event = captured_notification(app, "input/orders.csv")

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda _: app.orchestrator.handle(event), range(5)))

    kinds = sorted(r.outcomes[0].kind for r in results)
    assert kinds.count(OutcomeKind.STARTED) == 1
    assert kinds.count(OutcomeKind.DUPLICATE) == 4
    assert len({r.outcomes[0].job_name for r in results}) == 1
    (record,) = app.jobs.list_jobs()
    (done,) = app.wait([record.job_name])
    assert done.status == JobStatus.COMPLETED
    assert len(list((app.settings.home / "jobs").iterdir())) == 1


def test_event_from_five_processes_one_job(make_app, home):
    app = make_app()
    event = json.dumps(captured_notification(app, "input/orders.csv"))
    environment = {**os.environ, "PREPFLOW_HOME": str(home)}

    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "prepflow", "invoke", event, "--no-wait", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for _ in range(5)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]

    assert [p.returncode for p in processes] == [0] * 5, outputs
    names = {job["job_name"] for stdout, _ in outputs for job in json.loads(stdout)}
    assert len(names) == 1
    (record,) = app.jobs.list_jobs()
    (done,) = app.wait([record.job_name])
    assert done.status == JobStatus.COMPLETED


def test_new_upload_of_same_key_new_job(make_app):
    app = make_app()
    first = captured_notification(app, "input/orders.csv")
    second = captured_notification(app, "input/orders.csv", b"id,value\n3,c\n")

    names = [app.orchestrator.handle(e).outcomes[0].job_name for e in (first, second)]

    assert names[0] != names[1]
    records = app.wait(names)
    assert [r.rows_out for r in records] == [1, 1]


def test_crash_between_record_and_submit(make_app):
    app = make_app()
    event = captured_notification(app, "input/orders.csv")
    original_submit = app.runner.submit

    def crash(spec):
        raise KeyboardInterrupt("simulated crash before the job was submitted")

    app.runner.submit = crash
    with pytest.raises(KeyboardInterrupt):
        app.orchestrator.handle(event)
    (pending,) = app.jobs.list_jobs()
    assert pending.submitted_at is None

    app.runner.submit = original_submit
    result = app.orchestrator.handle(event)

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.STARTED
    assert outcome.job_name == pending.job_name
    (record,) = app.wait([pending.job_name])
    assert record.status == JobStatus.COMPLETED
    assert record.submitted_at is not None


def test_crash_after_submit_before_record(make_app):
    app = make_app()
    event = captured_notification(app, "input/orders.csv")
    original_update = app.jobs.update
    calls = []

    def crash_once(name, **changes):
        if "submitted_at" in changes and not calls:
            calls.append(name)
            raise KeyboardInterrupt("simulated crash after submit")
        return original_update(name, **changes)

    app.jobs.update = crash_once
    with pytest.raises(KeyboardInterrupt):
        app.orchestrator.handle(event)

    retry = app.orchestrator.handle(event)

    (outcome,) = retry.outcomes
    assert outcome.kind == OutcomeKind.DUPLICATE
    assert outcome.job_name == calls[0]
    assert len(list((app.settings.home / "jobs").iterdir())) == 1
    (record,) = app.wait([calls[0]])
    assert record.status == JobStatus.COMPLETED
