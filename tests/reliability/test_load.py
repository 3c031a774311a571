"""A burst of files into the watched folder: one job each, all complete, within the slot limit."""

from __future__ import annotations

import itertools
import os
import time

import pytest

from prepflow.jobs.spec import JobStatus
from tests.reliability.pipeline import (
    RAW,
    max_concurrent,
    output_folder,
    raw_folder,
    running_watch,
    slot_holds,
    wait_for_terminal_jobs,
    write_copy_script,
)

FILES = 200
SLOTS = 3
# About 50 s on a 2-core machine, most of it spent starting one supervisor process per job.
# The deadline leaves room for a CI machine that runs other tests beside this one.
DEADLINE_SECONDS = 400


@pytest.mark.timeout(DEADLINE_SECONDS + 120)
def test_burst_of_files_within_slot_limit(home, tmp_path, figures):
    staging = tmp_path / "staging"
    staging.mkdir()
    contents = {f"burst-{number:03d}.csv": f"id,value\n{number},x\n" for number in range(FILES)}
    for name, text in contents.items():
        (staging / name).write_text(text)
    script = write_copy_script(tmp_path)
    watched = raw_folder(home)
    watched.mkdir(parents=True)
    environment = {"PREPFLOW_MAX_CONCURRENT_JOBS": str(SLOTS), "PREPFLOW_ISOLATION": "none"}

    with running_watch(
        home, "--interval", "0.2", "--settle", "0.5", "--script", str(script), env=environment
    ):
        # The same file system, so each rename is atomic and the files arrive at once.
        started = time.monotonic()
        for name in contents:
            os.rename(staging / name, watched / name)
        rename_seconds = time.monotonic() - started
        records = wait_for_terminal_jobs(home, FILES, timeout=DEADLINE_SECONDS)

    assert len(records) == FILES
    assert [r.status for r in records] == [JobStatus.COMPLETED] * FILES
    names = [r.job_name for r in records]
    assert len(set(names)) == FILES
    inputs = sorted(uri for r in records for uri in r.inputs)
    assert inputs == sorted(f"s3://{RAW}/input/{name}" for name in contents)
    for record in records:
        (uri,) = record.inputs
        name = uri.rsplit("/", 1)[1]
        copied = output_folder(home, record.job_name) / f"copied_{name}"
        assert copied.read_text() == contents[name]
    holds = slot_holds(home, names)
    assert {hold.slot for hold in holds} <= set(range(SLOTS))
    for slot in range(SLOTS):
        in_slot = sorted((h for h in holds if h.slot == slot), key=lambda h: h.acquired)
        for earlier, later in itertools.pairwise(in_slot):
            assert earlier.released <= later.acquired, (earlier, later)
    peak = max_concurrent(holds)
    assert peak <= SLOTS
    figures.record(
        f"{FILES} files renamed into the watched folder within {rename_seconds * 1000:.1f} ms, "
        f"`watch` with PREPFLOW_MAX_CONCURRENT_JOBS={SLOTS}",
        FILES,
        f"{len(records)} jobs with {len(set(names))} distinct names, all Completed, each "
        f"output equal to its input; at most {peak} jobs held a slot at once",
    )
