"""The local runner as a backend: what it rejects, and how many jobs it runs at once."""

from __future__ import annotations

import json

import pytest

from prepflow.errors import JobExistsError, JobNotFoundError, JobSpecError
from prepflow.jobs.spec import JobStatus, ProcessingJobSpec
from prepflow.jobs.template import StepTemplate, build_spec, upload_script
from tests.helpers import requires_namespaces, wait_until


def spec_for(app, name="prepflow-runner-test-1", **changes):
    request = build_spec(
        app.settings,
        StepTemplate.built_in(),
        name=name,
        manifest_uri=f"s3://{app.settings.buckets.model_artifacts}/manifests/{name}.manifest",
        output_uri=f"s3://{app.settings.buckets.processed}/output/{name}/",
    ).to_request()
    request.update(changes)
    return ProcessingJobSpec.from_request(request)


def test_runner_rejects_invalid_name(make_app):
    app = make_app()

    with pytest.raises(JobSpecError, match="ProcessingJobName 'bad_name!'"):
        app.runner.submit(spec_for(app, name="bad_name!"))

    assert not (app.settings.home / "jobs" / "bad_name!").exists()


def test_runner_rejects_duplicate_input_names(make_app):
    app = make_app()
    spec = spec_for(app)
    request = spec.to_request()
    second = json.loads(json.dumps(request["ProcessingInputs"][0]))
    second["S3Input"]["LocalPath"] = "/opt/ml/processing/other"
    request["ProcessingInputs"].append(second)

    with pytest.raises(JobSpecError, match="InputName 'data' is used by more than one input"):
        app.runner.submit(ProcessingJobSpec.from_request(request))


def test_runner_rejects_duplicate_local_paths(make_app):
    app = make_app()
    request = spec_for(app).to_request()
    output = json.loads(json.dumps(request["ProcessingOutputConfig"]["Outputs"][0]))
    output["OutputName"] = "second"
    request["ProcessingOutputConfig"]["Outputs"].append(output)

    with pytest.raises(JobSpecError, match="LocalPath '/opt/ml/processing/output' is used by"):
        app.runner.submit(ProcessingJobSpec.from_request(request))


def test_runner_rejects_duplicate_job_name(make_app):
    app = make_app()
    spec = spec_for(app)
    app.store.put_object(app.settings.buckets.raw, "input/x.csv", b"a\n1\n")
    app.store.put_manifest(
        app.settings.buckets.model_artifacts,
        f"manifests/{spec.name}.manifest",
        f"s3://{app.settings.buckets.raw}/input/",
        ["x.csv"],
    )
    app.runner.submit(spec)

    with pytest.raises(JobExistsError):
        app.runner.submit(spec)


def test_describe_unknown_job(make_app):
    app = make_app()

    with pytest.raises(JobNotFoundError):
        app.runner.describe("prepflow-never-submitted")


def test_missing_input_fails_job(make_app):
    app = make_app()
    spec = spec_for(app)

    app.runner.submit(spec)

    description = wait_for_end(app, spec.name)
    assert description.status == JobStatus.FAILED
    assert description.failure_reason.startswith("ClientError: ")
    assert "not found" in description.failure_reason


def wait_for_end(app, name):
    return wait_until(
        lambda: (d := app.runner.describe(name)).status.is_terminal and d,
        timeout=60,
        description=f"job {name} to end",
    )


@requires_namespaces
def test_concurrency_limit_respected(make_app, tmp_path):
    app = make_app(max_concurrent_jobs=2)
    script = tmp_path / "timed.py"
    script.write_text(
        "import json, time\n"
        "start = time.time()\n"
        "time.sleep(1.0)\n"
        "with open('/opt/ml/processing/output/times.json', 'w') as handle:\n"
        "    json.dump([start, time.time()], handle)\n"
    )
    app.orchestrator.step = upload_script(app.store, app.settings, script)
    seen = []
    app.store.subscribe(app.settings.buckets.raw, lambda event: seen.append(event))
    for number in range(5):
        app.store.put_object(app.settings.buckets.raw, f"input/part{number}.csv", b"a\n1\n")

    names = [app.orchestrator.handle(event).outcomes[0].job_name for event in seen]
    records = app.wait(names, timeout=120)

    assert [r.status for r in records] == [JobStatus.COMPLETED] * 5
    intervals = []
    for record in records:
        (uri,) = app.output_files(record)
        intervals.append(json.loads(app.local_path(uri).read_text()))
    moments = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = max_running = 0
    for _, change in moments:
        running += change
        max_running = max(max_running, running)
    assert max_running == 2


@requires_namespaces
def test_replaced_input_fails_older_job(make_app, tmp_path):
    app = make_app(max_concurrent_jobs=1)
    script = tmp_path / "copy.py"
    script.write_text(
        "import os, shutil, time\n"
        "names = [n for n in os.listdir('/opt/ml/processing/input') if n.endswith('.csv')]\n"
        "if 'blocker.csv' in names:\n"
        "    time.sleep(1.5)\n"
        "for name in names:\n"
        "    shutil.copy('/opt/ml/processing/input/' + name, '/opt/ml/processing/output/' + name)\n"
    )
    app.orchestrator.step = upload_script(app.store, app.settings, script)
    names = []
    app.store.subscribe(
        app.settings.buckets.raw,
        lambda event: names.append(app.orchestrator.handle(event).outcomes[0].job_name),
    )
    raw = app.settings.buckets.raw
    app.store.put_object(raw, "input/blocker.csv", b"id\n0\n")
    app.store.put_object(raw, "input/data.csv", b"id\nfirst\n")
    app.store.put_object(raw, "input/data.csv", b"id\nsecond\n")

    blocker, older, newer = app.wait(names, timeout=120)

    assert blocker.status == JobStatus.COMPLETED
    assert older.status == JobStatus.FAILED
    assert "changed after the upload that started this job" in older.failure_reason
    assert newer.status == JobStatus.COMPLETED
    (uri,) = app.output_files(newer)
    assert app.local_path(uri).read_text() == "id\nsecond\n"


def test_runner_that_never_started_fails_job(make_app):
    app = make_app()
    spec = spec_for(app)
    folder = app.runner._claim(spec)  # a submitter that died before starting the supervisor
    folder.write_status(creation_time="2020-01-01T00:00:00+00:00")

    description = app.runner.describe(spec.name)

    assert description.status == JobStatus.FAILED
    assert "never started" in description.failure_reason


def test_claim_leaves_no_draft_folder(make_app):
    app = make_app()
    spec = spec_for(app)
    app.runner._claim(spec)

    with pytest.raises(JobExistsError):
        app.runner._claim(spec)

    assert sorted(p.name for p in (app.settings.home / "jobs").iterdir()) == [spec.name]
