"""Time prepflow's two ways to scale out locally, and print the results as Markdown.

(a) ``--files`` small CSV files through ``prepflow watch --once``, once per batch window in
    ``--windows``: a window of 0 starts one job per file, a window above 0 collects the
    settled files into batch jobs (``--batch-window``, the PREPFLOW_BATCH_WINDOW_SECONDS
    setting). Reports the jobs started, the total time and files per second.
(b) The file of bench/generate_mock.py (``--size``, 1 GiB by default), split into
    ``--parts`` CSV files with the header repeated, processed as one job through
    ``prepflow invoke --input <prefix>`` once per count in ``--hosts``
    (``--instance-count``). Reports the wall time per host count. ``--skip-hosts`` leaves
    this part out.

Every run gets a new, empty PREPFLOW_HOME under ``--work-dir``. Each command is timed by
process_timing.measure (wall time with ``time.perf_counter``); one run per setting, so
repeat the script to see the spread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generate_mock import generate, parse_size
from process_timing import BenchError, measure

RAW_BUCKET = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
INPUT_PREFIX = "input/"
TIMEOUT_SECONDS = 3 * 3600.0
SMALL_FILE = "id,name,amount\n{n},item-{n},{amount}\n{m},item-{m},\n"


@dataclass
class Row:
    setting: str
    files: int
    jobs: int
    wall_s: float


def prepflow(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "prepflow", "--home", str(home), *args]


def run(argv: list[str]) -> float:
    """Run a prepflow command; return its wall time, or raise BenchError if it failed."""
    result = measure(argv, env=dict(os.environ), timeout_s=TIMEOUT_SECONDS, reap_orphans=False)
    if result.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)} exited with code {result.returncode}: {result.stderr[-2000:]}"
        )
    return result.wall_s


def count_jobs(home: Path) -> int:
    jobs = home / "jobs"
    return (
        sum(1 for path in jobs.iterdir() if not path.name.startswith(".")) if jobs.is_dir() else 0
    )


def watch_files(work: Path, files: int, window: float) -> Row:
    """Time ``watch --once`` over ``files`` small files with a batch window of ``window`` s."""
    home = Path(tempfile.mkdtemp(prefix="watch-", dir=work))
    folder = home / "buckets" / RAW_BUCKET / INPUT_PREFIX
    folder.mkdir(parents=True)
    for number in range(files):
        text = SMALL_FILE.format(n=number, m=number + files, amount=number % 97)
        (folder / f"file{number:05d}.csv").write_text(text)
    argv = prepflow(home, "watch", "--once", "--settle", "0", "--batch-window", str(window))
    wall = run(argv)
    row = Row(f"window {window:g} s", files, count_jobs(home), wall)
    shutil.rmtree(home)
    return row


def split_file(source: Path, parts: int, folder: Path) -> list[Path]:
    """Split a CSV file into ``parts`` files of about equal size, each with the header."""
    folder.mkdir(parents=True, exist_ok=True)
    size = source.stat().st_size
    paths = [folder / f"part{number:02d}.csv" for number in range(parts)]
    with source.open("rb") as reader:
        header = reader.readline()
        for number, path in enumerate(paths):
            end = size * (number + 1) // parts
            with path.open("wb") as writer:
                writer.write(header)
                while reader.tell() < end and (line := reader.readline()):
                    writer.write(line)
    return paths


def hosts_run(work: Path, parts: list[Path], hosts: int) -> Row:
    """Time one job over every part on ``hosts`` instances."""
    # Imported here: part (a) needs nothing of prepflow in this process.
    from prepflow.storage.local import LocalObjectStore

    home = Path(tempfile.mkdtemp(prefix="hosts-", dir=work))
    store = LocalObjectStore(home)
    for path in parts:
        # No subscriber: the upload starts no job, and the manual request below starts one.
        store.upload_file(RAW_BUCKET, f"{INPUT_PREFIX}split/{path.name}", path)
    argv = prepflow(
        home,
        "invoke",
        "--input",
        f"s3://{RAW_BUCKET}/{INPUT_PREFIX}split/",
        "--instance-count",
        str(hosts),
        "--json",
    )
    wall = run(argv)
    row = Row(f"{hosts} host(s)", len(parts), count_jobs(home), wall)
    shutil.rmtree(home)
    return row


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n### {title}\n")
    print("| setting | files | jobs | total time (s) | files per second |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        rate = row.files / row.wall_s if row.wall_s else 0.0
        print(f"| {row.setting} | {row.files:,} | {row.jobs:,} | {row.wall_s:.2f} | {rate:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="small files for part (a)")
    parser.add_argument(
        "--windows", default="0,2", help="comma-separated batch windows in seconds for part (a)"
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("1GiB"),
        help="size of the generated file for part (b), such as 1GiB",
    )
    parser.add_argument(
        "--parts", type=int, default=8, help="number of files the part (b) file is split into"
    )
    parser.add_argument(
        "--hosts", default="1,2", help="comma-separated instance counts for part (b)"
    )
    parser.add_argument("--skip-hosts", action="store_true", help="run part (a) only")
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()), help="scratch folder"
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="prepflow-scale-", dir=args.work_dir))
    try:
        print("## Scale-out benchmark\n")
        print(f"Machine: {os.cpu_count()} CPUs. One run per setting.")
        windows = [float(item) for item in args.windows.split(",")]
        print_table(
            "(a) small files through watch",
            [watch_files(work, args.files, window) for window in windows],
        )
        if not args.skip_hosts:
            source = work / "mock.csv"
            generate(source, seed=7, rows=None, size_bytes=args.size)
            parts = split_file(source, args.parts, work / "parts")
            source.unlink()
            counts = [int(item) for item in args.hosts.split(",")]
            print_table(
                f"(b) one job over {args.parts} parts of {args.size:,} bytes",
                [hosts_run(work, parts, hosts) for hosts in counts],
            )
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
