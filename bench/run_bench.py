"""Time ``prepflow run FILE --json`` from process start to exit, with peak memory and context.

Each run gets a new, empty PREPFLOW_HOME, so no run reuses a job, a database or a staged file
of another. The script checks every run's JSON (status Completed, rows_in and rows_out equal
to a count made here with the csv module) and stops with exit code 1 at the first mismatch.

``prepflow run`` does not wait for the job's supervisor process: the supervisor runs in its
own session and outlives the CLI, as a SageMaker job outlives its API call. This script
therefore adopts it as a child subreaper (see process_timing.py) to report the job's peak
RSS next to the CLI's.

The same runs are split into phases at the moments that the job folder records, and the
script times ``python -c pass``, ``import polars``, ``import prepflow.cli`` and the built-in
step's work alone, to show where the time goes. Run ``python bench/run_bench.py --help`` for
the options; docs/benchmarks.md has results.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from machine import REPO_ROOT, machine_facts
from process_timing import (
    GNU_TIME,
    BenchError,
    Measurement,
    enable_subreaper,
    measure,
    measure_command,
)

SHARED_SAMPLE = Path("/work/shared/data/mock_data.csv")
GENERATED_SAMPLE = REPO_ROOT / "examples" / "data" / "employees.csv"

# pandas.read_csv's default na_values (pandas 2.x). prepflow's reference step drops a row
# when any field is one of these, so the expected rows_out is counted with the same list.
MISSING_TOKENS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})  # fmt: skip

# Times the built-in step's work alone (the default recipe on one input folder), because the
# clock starts after the import.
WORK_ONLY_SNIPPET = """
import sys, time
from pathlib import Path
from prepflow.processing.__main__ import run
from prepflow.processing.paths import StepPaths
paths = StepPaths(input_dir=Path(sys.argv[1]), output_dir=Path(sys.argv[2]))
started = time.perf_counter()
run(paths)
print(time.perf_counter() - started)
"""


@dataclass
class RunResult:
    """One ``prepflow run`` with what its job folder recorded."""

    measurement: Measurement
    job_name: str
    phases: dict[str, float] = field(default_factory=dict)
    command_mode: str = "unknown"


# -- prepflow runs --------------------------------------------------------------------------


def run_prepflow(
    prepflow: Path,
    input_file: Path,
    expected: tuple[int, int],
    *,
    timeout_s: float,
    reap_orphans: bool,
    keep_home: bool,
) -> RunResult:
    """Run ``prepflow run INPUT --json`` in a new PREPFLOW_HOME and check its result."""
    home = Path(tempfile.mkdtemp(prefix="prepflow-bench-home-"))
    env = {**os.environ, "PREPFLOW_HOME": str(home)}
    try:
        measurement = measure(
            [str(prepflow), "run", str(input_file), "--json"],
            env=env,
            timeout_s=timeout_s,
            reap_orphans=reap_orphans,
        )
        job_name = _check_result(measurement, expected)
        result = RunResult(measurement=measurement, job_name=job_name)
        _read_phases(result, home / "jobs" / job_name)
    except BenchError as error:
        raise BenchError(f"{error}\nPREPFLOW_HOME kept for inspection: {home}") from error
    if not keep_home:
        shutil.rmtree(home, ignore_errors=True)
    return result


def _check_result(measurement: Measurement, expected: tuple[int, int]) -> str:
    """Raise BenchError unless the run printed one Completed job with the expected counts."""
    output = f"stdout:\n{measurement.stdout}\nstderr:\n{measurement.stderr}"
    if measurement.returncode != 0:
        raise BenchError(f"prepflow run exited with code {measurement.returncode}\n{output}")
    try:
        jobs = json.loads(measurement.stdout)
    except json.JSONDecodeError as error:
        raise BenchError(f"prepflow run printed invalid JSON ({error})\n{output}") from error
    if not isinstance(jobs, list) or len(jobs) != 1:
        raise BenchError(f"prepflow run printed JSON that is not a list of one job\n{output}")
    job = jobs[0]
    rows_in, rows_out = expected
    problems = []
    if job.get("status") != "Completed":
        problems.append(f"status {job.get('status')!r}, expected 'Completed'")
    if job.get("rows_in") != rows_in:
        problems.append(f"rows_in {job.get('rows_in')!r}, expected {rows_in}")
    if job.get("rows_out") != rows_out:
        problems.append(f"rows_out {job.get('rows_out')!r}, expected {rows_out}")
    if problems:
        raise BenchError("unexpected job result: " + "; ".join(problems) + f"\n{output}")
    return str(job["job_name"])


def _read_phases(result: RunResult, job_folder: Path) -> None:
    """Split the run's wall time at the moments the job folder recorded.

    status.json records the creation, start and end times in UTC (ISO 8601). runner.log
    records, in local time to the millisecond, when the supervisor started the container
    command and when the outputs were uploaded. A moment that cannot be read leaves out the
    phases that begin or end at it.
    """
    try:
        status = json.loads((job_folder / "status.json").read_text())
        log = (job_folder / "runner.log").read_text()
    except (OSError, json.JSONDecodeError):
        return
    moments: dict[str, float | None] = {
        "launch": result.measurement.started_epoch,
        "created": _iso_epoch(status.get("creation_time")),
        "started": _iso_epoch(status.get("start_time")),
        "command": _log_epoch(log, "running ["),
        "uploaded": _log_epoch(log, "uploaded"),
        "ended": _iso_epoch(status.get("end_time")),
        "exit": result.measurement.ended_epoch,
    }
    spans = {
        "CLI start-up, upload, submit": ("launch", "created"),
        "supervisor start-up": ("created", "started"),
        "input staging": ("started", "command"),
        "step command and output upload": ("command", "uploaded"),
        "job end recorded": ("uploaded", "ended"),
        "CLI notices the end, exits": ("ended", "exit"),
    }
    for name, (first, last) in spans.items():
        begin, end = moments[first], moments[last]
        if begin is not None and end is not None:
            result.phases[name] = end - begin
    if "unshare" in log:
        result.command_mode = "namespace (unshare + sandbox)"
    elif "running [" in log:
        result.command_mode = "none (plain process)"


def _iso_epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _log_epoch(log: str, marker: str) -> float | None:
    for line in log.splitlines():
        if marker in line:
            try:
                return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                return None
    return None


def count_expected_rows(path: Path) -> tuple[int, int]:
    """Count data rows, and rows with no missing field, as pandas.read_csv and dropna would.

    Blank lines are skipped, as pandas skips them by default.
    """
    rows_in = rows_out = 0
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            if not row:
                continue
            rows_in += 1
            if not any(value in MISSING_TOKENS for value in row):
                rows_out += 1
    return rows_in, rows_out


# -- context measurements -------------------------------------------------------------------


def measure_work_only(python: str, input_file: Path, runs: int, timeout_s: float) -> list[float]:
    """Time the step's work alone, in a fresh interpreter per run, import excluded."""
    seconds = []
    with tempfile.TemporaryDirectory(prefix="prepflow-bench-work-") as scratch:
        input_dir, target = Path(scratch, "input"), Path(scratch, "output")
        input_dir.mkdir()
        (input_dir / input_file.name).symlink_to(input_file.resolve())
        argv = [python, "-c", WORK_ONLY_SNIPPET, str(input_dir), str(target)]
        for measurement in measure_command(argv, runs, timeout_s):
            seconds.append(float(measurement.stdout.strip().splitlines()[-1]))
    return seconds


def measure_step_alone(
    python: str, input_file: Path, runs: int, timeout_s: float
) -> list[Measurement]:
    """Time the built-in step as a plain process: ``python -m prepflow.processing``."""
    with tempfile.TemporaryDirectory(prefix="prepflow-bench-step-") as scratch:
        input_dir, output_dir = Path(scratch, "input"), Path(scratch, "output")
        input_dir.mkdir()
        staged = input_dir / input_file.name
        try:
            os.link(input_file, staged)
        except OSError:
            shutil.copyfile(input_file, staged)
        argv = [
            python, "-m", "prepflow.processing",
            "--input", str(input_dir), "--output", str(output_dir),
        ]  # fmt: skip
        return measure_command(argv, runs, timeout_s)


# -- reporting ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: a name and its per-run values."""

    name: str
    values: list[float]
    unit: str  # "s" or "MiB"


def build_rows(
    runs: list[RunResult], baselines: dict[str, list[Measurement]], work_s: list[float]
) -> list[Row]:
    rows = [Row("`prepflow run` wall time", [r.measurement.wall_s for r in runs], "s")]
    phase_names = list(dict.fromkeys(name for r in runs for name in r.phases))
    for name in phase_names:
        values = [r.phases[name] for r in runs if name in r.phases]
        rows.append(Row(f"  phase: {name}", values, "s"))
    rows.append(Row("peak RSS, prepflow CLI", _mib([r.measurement.rss_kib for r in runs]), "MiB"))
    orphan = _mib([r.measurement.orphan_rss_kib for r in runs])
    if orphan:
        rows.append(Row("peak RSS, job (supervisor and step)", orphan, "MiB"))
    for label, measurements in baselines.items():
        rows.append(Row(label, [m.wall_s for m in measurements], "s"))
    if work_s:
        rows.append(Row("step's work alone (import excluded)", work_s, "s"))
    return rows


def _mib(values: list[int | None]) -> list[float]:
    return [v / 1024 for v in values if v is not None]


def _format(value: float, unit: str) -> str:
    return f"{value:.3f} s" if unit == "s" else f"{value:.1f} MiB"


def print_text(facts: dict[str, str], rows: list[Row], runs: list[RunResult]) -> None:
    for name, value in facts.items():
        print(f"{name + ':':<26} {value}")
    print()
    width = max(len(row.name) for row in rows)
    print(f"{'measurement':<{width}}  {'runs':>4}  {'median':>11}  {'min':>11}  {'max':>11}")
    for row in rows:
        cells = [_format(f(row.values), row.unit) for f in (statistics.median, min, max)]
        print(f"{row.name:<{width}}  {len(row.values):>4}  " + "  ".join(f"{c:>11}" for c in cells))
    print()
    print("wall time per run: " + ", ".join(f"{r.measurement.wall_s:.3f} s" for r in runs))


def print_markdown(facts: dict[str, str], rows: list[Row], runs: list[RunResult]) -> None:
    for name, value in facts.items():
        print(f"- {name}: {value}")
    print()
    print("| measurement | runs | median | min | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        cells = [_format(f(row.values), row.unit) for f in (statistics.median, min, max)]
        print(f"| {row.name.strip()} | {len(row.values)} | " + " | ".join(cells) + " |")
    print()
    print("Wall time per run: " + ", ".join(f"{r.measurement.wall_s:.3f} s" for r in runs) + ".")


# -- command line ---------------------------------------------------------------------------


def default_input() -> Path:
    return SHARED_SAMPLE if SHARED_SAMPLE.is_file() else GENERATED_SAMPLE


def default_prepflow() -> Path:
    beside_python = Path(sys.executable).parent / "prepflow"
    if beside_python.exists():
        return beside_python
    found = shutil.which("prepflow")
    return Path(found) if found else beside_python


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time 'prepflow run FILE --json' from process start to exit, each run in a "
        "new PREPFLOW_HOME, and report wall time, peak RSS and where the time goes.",
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=default_input(),
        help=f"CSV file to process (default: {SHARED_SAMPLE} if it exists, else "
        f"{GENERATED_SAMPLE.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="timed runs of each command (default: 5)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed 'prepflow run' calls before the timed ones, e.g. to fill the page cache "
        "(default: 0)",
    )
    parser.add_argument(
        "--expected-rows-out",
        type=int,
        default=None,
        help="rows the job must write (default: counted from the input with the csv module)",
    )

    parser.add_argument(
        "--prepflow",
        type=Path,
        default=default_prepflow(),
        help="prepflow executable (default: the one next to this Python, else on PATH)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds a single command may run before it is killed (default: 600)",
    )
    parser.add_argument(
        "--goal",
        type=float,
        default=None,
        metavar="SECONDS",
        help="report whether the median wall time of 'prepflow run' is below this many seconds",
    )

    parser.add_argument("--markdown", action="store_true", help="print a Markdown list and table")
    parser.add_argument(
        "--keep-homes",
        action="store_true",
        help="keep each run's PREPFLOW_HOME instead of deleting it (failed runs always keep it)",
    )
    parser.add_argument(
        "--json-out", type=Path, default=None, help="also write every per-run value to this file"
    )
    return parser


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line and exit with a usage error on a value that cannot work."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be 1 or more, got {args.runs}")
    if args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, got {args.warmup}")
    if not args.input.is_file():
        parser.error(
            f"input file not found: {args.input}. Pass an existing CSV file, or write one "
            "with examples/data/generate_employees.py"
        )
    if not args.prepflow.exists():
        parser.error(f"prepflow executable not found: {args.prepflow}. Pass --prepflow PATH")
    return args


def run_prepflow_series(
    args: argparse.Namespace, expected: tuple[int, int], *, reap_orphans: bool
) -> list[RunResult]:
    """Run the warm-up calls, then the timed ones, and return the timed results."""
    for _ in range(args.warmup):
        run_prepflow(
            args.prepflow,
            args.input,
            expected,
            timeout_s=args.timeout,
            reap_orphans=reap_orphans,
            keep_home=False,
        )
    runs = []
    for number in range(1, args.runs + 1):
        result = run_prepflow(
            args.prepflow,
            args.input,
            expected,
            timeout_s=args.timeout,
            reap_orphans=reap_orphans,
            keep_home=args.keep_homes,
        )
        print(f"run {number}/{args.runs}: {result.measurement.wall_s:.3f} s", file=sys.stderr)
        runs.append(result)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    python = sys.executable
    reap = enable_subreaper()
    if not reap:
        print(
            "note: cannot become a child subreaper here, so the job's peak RSS is not measured",
            file=sys.stderr,
        )
    if not GNU_TIME.exists():
        print(
            f"note: {GNU_TIME} not found, so peak RSS comes from os.wait4 rusage instead",
            file=sys.stderr,
        )

    try:
        rows_in, rows_out = count_expected_rows(args.input)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        print(f"error: cannot count the rows of {args.input} as CSV: {error}", file=sys.stderr)
        return 2
    if args.expected_rows_out is not None:
        rows_out = args.expected_rows_out
    facts = machine_facts(python, args.prepflow, args.input, rows_in)

    try:
        runs = run_prepflow_series(args, (rows_in, rows_out), reap_orphans=reap)
        baselines = {
            "`python -c pass`": measure_command([python, "-c", "pass"], args.runs, args.timeout),
            '`python -c "import polars"`': measure_command(
                [python, "-c", "import polars"], args.runs, args.timeout
            ),
            '`python -c "import prepflow.cli"`': measure_command(
                [python, "-c", "import prepflow.cli"], args.runs, args.timeout
            ),
        }
        baselines["`python -m prepflow.processing` on the input"] = measure_step_alone(
            python, args.input, args.runs, args.timeout
        )
        work_s = measure_work_only(python, args.input, args.runs, args.timeout)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    facts["job command isolation"] = ", ".join(sorted({r.command_mode for r in runs}))
    rows = build_rows(runs, baselines, work_s)
    if args.markdown:
        print_markdown(facts, rows, runs)
    else:
        print_text(facts, rows, runs)
    if args.goal is not None:
        median = statistics.median(r.measurement.wall_s for r in runs)
        verdict = "met" if median < args.goal else "NOT met"
        print(f"\ngoal: median wall time {median:.3f} s < {args.goal:g} s: {verdict}")
    if args.json_out is not None:
        _write_json(args.json_out, facts, rows, runs)
    return 0


def _write_json(path: Path, facts: dict[str, str], rows: list[Row], runs: list[RunResult]) -> None:
    document = {
        "machine": facts,
        "rows": [{"name": r.name.strip(), "unit": r.unit, "values": r.values} for r in rows],
        "runs": [
            {
                "job_name": r.job_name,
                "wall_s": r.measurement.wall_s,
                "phases": r.phases,
                "command_mode": r.command_mode,
                "rss_kib": r.measurement.rss_kib,
                "job_rss_kib": r.measurement.orphan_rss_kib,
                "orphan_tail_s": r.measurement.orphan_tail_s,
            }
            for r in runs
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
