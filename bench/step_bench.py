"""Time prepflow's processing step against pandas and ``cp`` on generated employee files.

For each size and recipe, four commands run ``--runs`` times each, interleaved run by run:

- ``cp FILE OUT``: the cost of copying the file, for scale (GNU cp copies inside the kernel
  where it can, so this is cheaper than any program that parses the bytes);
- ``python -c POLARS_COPY FILE OUT``: polars' streaming engine reads and writes the CSV
  with no checks, steps or report, on every core: parsing and writing alone, for scale;
- ``python bench/pandas_recipes.py RECIPE FILE OUT``: the pandas baseline, with ``--report``
  for the default recipe unless ``--legacy-step`` is given, so it does the step's work;
- ``python -m prepflow.processing --input DIR --output DIR --rejected DIR --report DIR``,
  plus ``--recipe examples/recipes/employees.yaml`` for the employees recipe.

``cp`` and polars-copy do not depend on the recipe, so they run once per size and their
figures appear under each recipe. Every run writes into a new, empty folder, deleted after
the run. Input files come from bench/generate_mock.py and are kept in ``--data-dir`` for
later invocations. Before the runs the input is read once, so each tool starts with it in
the page cache.

Each run is timed by process_timing.measure: wall time with ``time.perf_counter`` and peak
RSS from ``/usr/bin/time -v``. CPU time (user plus system) comes from this process's
RUSAGE_CHILDREN totals, and shows the work done even when other load stretches the wall
time. The script reports medians. Run it with
``env -u PYTHONDONTWRITEBYTECODE`` so Python caches bytecode as it would for a normal user.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from generate_mock import generate, parse_size
from machine import REPO_ROOT, machine_facts
from process_timing import BenchError, Measurement, measure

TOOLS = ("cp", "polars-copy", "pandas", "prepflow")
# Tools whose work does not depend on the recipe: one series per size, shown under each recipe.
RECIPE_FREE = ("cp", "polars-copy")
# Parsing and writing alone: every row through polars' streaming engine (all cores), with no
# checks, steps or report.
POLARS_COPY = (
    "import sys, polars as pl; pl.scan_csv(sys.argv[1], infer_schema=False).sink_csv(sys.argv[2])"
)
RECIPES = ("default", "employees")
EMPLOYEES_RECIPE = REPO_ROOT / "examples" / "recipes" / "employees.yaml"
PANDAS_SCRIPT = Path(__file__).resolve().with_name("pandas_recipes.py")
STEP_MODULE = "prepflow.processing"
# Options the full step command needs. The step before recipes had --input and --output only.
STEP_OPTIONS = ("--input", "--output", "--rejected", "--report")
READ_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class InputFile:
    """A generated CSV file, and a folder that contains only a link to it for the step."""

    label: str
    path: Path
    input_dir: Path
    bytes: int
    rows: int
    generation_s: float | None


@dataclass
class Series:
    """All runs of one tool on one input and recipe."""

    size: str
    recipe: str
    tool: str
    command: list[str]
    wall_s: list[float] = field(default_factory=list)
    # User plus system CPU time of the command and the descendants it waited for.
    cpu_s: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    @property
    def median_wall_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_s)

    @property
    def median_rss_mib(self) -> float:
        return statistics.median(self.rss_kib) / 1024


# -- checks before any run ------------------------------------------------------------------


def check_prepflow(python: str, recipes: Sequence[str], legacy: bool, recipe_file: Path) -> None:
    """Raise BenchError, before any data is generated, if the step cannot run these recipes."""
    done = subprocess.run(
        [python, "-m", STEP_MODULE, "--help"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        last_line = lines[-1] if lines else "no output"
        raise BenchError(
            f"'{python} -m {STEP_MODULE} --help' failed with exit code {done.returncode}: "
            f"{last_line}. Install prepflow into that interpreter, or leave prepflow out of "
            "--tools"
        )
    if legacy:
        if "employees" in recipes:
            raise BenchError(
                "--legacy-step runs the step with --input and --output only, which is the "
                "default recipe; remove employees from --recipes"
            )
        return

    needed = list(STEP_OPTIONS) + (["--recipe"] if "employees" in recipes else [])
    absent = [option for option in needed if option not in done.stdout]
    if absent:
        raise BenchError(
            f"'{python} -m {STEP_MODULE}' does not accept {', '.join(absent)} yet. Time the "
            "current step with --legacy-step (default recipe only), or leave prepflow out "
            "of --tools"
        )
    if "employees" in recipes and not recipe_file.is_file():
        raise BenchError(
            f"recipe file {recipe_file} not found. Pass --employees-recipe FILE, or remove "
            "employees from --recipes"
        )


# -- inputs ---------------------------------------------------------------------------------


def prepare_input(label: str, args: argparse.Namespace) -> InputFile:
    """Generate the file for one size, or reuse it, and give it a folder of its own."""
    size_bytes = parse_size(label)
    name = f"mock-{label.lower()}-seed{args.seed}.csv"
    path = args.data_dir / name
    generation_s = None
    if args.regenerate or not path.is_file():
        print(f"generating {path} ...", file=sys.stderr)
        summary = generate(path, seed=args.seed, size_bytes=size_bytes)
        generation_s = summary.seconds
        rows = summary.rows
    else:
        rows = count_lines(path) - 1

    # The step reads every data file under its input folder, so this folder holds only a
    # hard link to the input: no copy, and no other sizes beside it.
    input_dir = args.work_dir / f"input-{label.lower()}"
    shutil.rmtree(input_dir, ignore_errors=True)
    input_dir.mkdir(parents=True)
    link = input_dir / name
    try:
        os.link(path, link)
    except OSError as error:
        raise BenchError(
            f"cannot hard-link {path} into {input_dir}: {error}. Put --data-dir and --work-dir "
            "on the same file system"
        ) from error
    return InputFile(label, path, input_dir, path.stat().st_size, rows, generation_s)


def count_lines(path: Path) -> int:
    """Count newline bytes. Generated files have no line breaks inside quoted fields."""
    lines = 0
    with path.open("rb") as handle:
        while block := handle.read(READ_BLOCK):
            lines += block.count(b"\n")
    return lines


def read_once(path: Path) -> None:
    """Read the file to /dev/null so the first timed run does not pay for the disk."""
    with path.open("rb") as handle:
        while handle.read(READ_BLOCK):
            pass


# -- commands and runs ----------------------------------------------------------------------


def build_command(
    tool: str, recipe: str, source: InputFile, run_dir: Path, args: argparse.Namespace
) -> list[str]:
    """Return the argv of one run, writing only under ``run_dir``."""
    if tool == "cp":
        return ["cp", str(source.path), str(run_dir / source.path.name)]
    if tool == "polars-copy":
        return [args.python, "-c", POLARS_COPY, str(source.path), str(run_dir / source.path.name)]
    if tool == "pandas":
        output = run_dir / "output"
        command = [args.python, str(PANDAS_SCRIPT), recipe, str(source.path), str(output)]
        # The full step command writes a report for every recipe, the legacy step none.
        if recipe == "default" and not args.legacy_step:
            command.append("--report")
        return command

    command = [args.python, "-m", STEP_MODULE, "--input", str(source.input_dir)]
    command += ["--output", str(run_dir / "output")]
    if args.legacy_step:
        return command
    command += ["--rejected", str(run_dir / "rejected"), "--report", str(run_dir / "report")]
    if recipe == "employees":
        command += ["--recipe", str(args.employees_recipe)]
    return command


def run_once(series: Series, run_dir: Path, timeout_s: float, record: bool = True) -> None:
    """Run the series' command in a new ``run_dir``, check its exit and output, and clean up.

    With ``record`` False the run is checked but its figures are not added to the series.
    """
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    try:
        # measure waits for its child, so the child's CPU time (with /usr/bin/time's own,
        # a few milliseconds) is added to this process's RUSAGE_CHILDREN totals.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        measurement = measure(
            series.command, env=dict(os.environ), timeout_s=timeout_s, reap_orphans=False
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        check_run(series, measurement, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if not record:
        return
    series.wall_s.append(measurement.wall_s)
    series.cpu_s.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if measurement.rss_kib is not None:
        series.rss_kib.append(measurement.rss_kib)


def check_run(series: Series, measurement: Measurement, run_dir: Path) -> None:
    """Raise BenchError if the command failed or wrote no non-empty file."""
    command = " ".join(series.command)
    if measurement.returncode != 0:
        raise BenchError(
            f"{command} exited with code {measurement.returncode}:\n{measurement.stderr.strip()}"
        )
    written = [path for path in run_dir.rglob("*") if path.is_file() and path.stat().st_size]
    if not written:
        raise BenchError(f"{command} exited with code 0 but wrote no non-empty file")


def run_input(source: InputFile, args: argparse.Namespace) -> list[Series]:
    """Time every tool and recipe on one input, interleaving the tools run by run.

    Interleaving spreads slow drift of the machine (other load, page cache) over all tools.
    """
    series: list[Series] = []
    for recipe in args.recipes:
        for tool in args.tools:
            if tool in RECIPE_FREE and any(s.tool == tool for s in series):
                continue
            command = build_command(tool, recipe, source, args.work_dir / "run", args)
            # cp's and polars-copy's one series serves every recipe.
            label = "any" if tool in RECIPE_FREE else recipe
            series.append(Series(source.label, label, tool, command))

    read_once(source.path)
    for run in range(1, args.warmup + 1):
        for item in series:
            print(f"{source.label} {item.recipe} {item.tool}: warm-up {run}", file=sys.stderr)
            run_once(item, args.work_dir / "run", args.timeout, record=False)
    for run in range(1, args.runs + 1):
        for item in series:
            print(
                f"{source.label} {item.recipe} {item.tool}: run {run}/{args.runs}", file=sys.stderr
            )
            run_once(item, args.work_dir / "run", args.timeout)
    return series


# -- output ---------------------------------------------------------------------------------


def table_rows(results: list[Series], recipes: Sequence[str]) -> list[list[str]]:
    """Build one table row per size, recipe and tool. cp's one series appears under each recipe."""
    rows: list[list[str]] = []
    sizes = list(dict.fromkeys(item.size for item in results))
    for size in sizes:
        copy = next((s for s in results if s.size == size and s.tool == "cp"), None)
        free = [s for s in results if s.size == size and s.tool in RECIPE_FREE]
        for recipe in recipes:
            group = [s for s in results if s.size == size and s.recipe == recipe]
            group = [s for s in group if s.tool not in RECIPE_FREE]
            pandas = next((s for s in group if s.tool == "pandas"), None)
            for item in free + group:
                rows.append(_table_row(size, recipe, item, pandas, copy))
    return rows


def _table_row(
    size: str, recipe: str, item: Series, pandas: Series | None, copy: Series | None
) -> list[str]:
    def ratio(value: float | None, base: float | None) -> str:
        return f"{value / base:.2f}" if value is not None and base else "-"

    rss = item.median_rss_mib if item.rss_kib else None
    pandas_rss = pandas.median_rss_mib if pandas and pandas.rss_kib else None
    return [
        size,
        recipe,
        item.tool,
        f"{item.median_wall_s:.3f}",
        f"{item.median_cpu_s:.3f}",
        f"{rss:.0f}" if rss is not None else "-",
        ratio(item.median_wall_s, pandas.median_wall_s if pandas else None),
        ratio(item.median_wall_s, copy.median_wall_s if copy else None),
        ratio(rss, pandas_rss),
    ]


HEADERS = (
    "size",
    "recipe",
    "tool",
    "median wall (s)",
    "median CPU (s)",
    "median peak RSS (MiB)",
    "wall / pandas",
    "wall / cp",
    "RSS / pandas",
)


def format_markdown(rows: list[list[str]]) -> str:
    alignment = ["---"] * 3 + ["---:"] * (len(HEADERS) - 3)
    lines = [_markdown_line(HEADERS), _markdown_line(alignment)]
    lines += [_markdown_line(row) for row in rows]
    return "\n".join(lines)


def _markdown_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_text(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [list(HEADERS), *rows]) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i >= 3 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [list(HEADERS), *rows]
    )


def describe_context(args: argparse.Namespace, inputs: list[InputFile]) -> dict[str, str]:
    """Describe the machine, versions and inputs before the runs, for printing with the table."""
    facts = machine_facts(args.python, Path(args.python), inputs[0].path, inputs[0].rows)
    facts.pop("prepflow command", None)
    facts.pop("input", None)
    facts.update(_versions(args.python, ("pandas", "pyarrow", "numpy")))
    facts["runs"] = (
        f"{args.runs} timed per tool after {args.warmup} untimed, interleaved run by run "
        "(medians reported)"
    )
    for source in inputs:
        generated = (
            f", generated in {source.generation_s:.1f} s"
            if source.generation_s is not None
            else ", reused"
        )
        facts[f"input {source.label}"] = (
            f"{source.path} ({source.bytes:,} bytes, {source.rows:,} data rows, seed "
            f"{args.seed}{generated})"
        )
    return facts


def describe_runs(first: InputFile, results: list[Series]) -> dict[str, str]:
    """Describe the load after the runs and the commands run on the first input.

    The other inputs' commands differ only in the file and folder names.
    """
    # Other work on the machine shows here. machine_facts recorded the value at the start.
    facts = {"load average at end": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    for series in results:
        if series.size == first.label:
            facts[f"command, {series.tool}, {series.recipe}"] = " ".join(series.command)
    return facts


def _versions(python: str, packages: Sequence[str]) -> dict[str, str]:
    """Return the installed version of each package in ``python``'s environment."""
    script = (
        "import sys\nfrom importlib import metadata\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n        print(metadata.version(name))\n"
        "    except metadata.PackageNotFoundError:\n        print('not installed')\n"
    )
    done = subprocess.run(
        [python, "-c", script, *packages], capture_output=True, text=True, check=False
    )
    found = done.stdout.splitlines()
    if done.returncode != 0 or len(found) != len(packages):
        return dict.fromkeys(packages, "unknown")
    return dict(zip(packages, found, strict=True))


# -- command line ---------------------------------------------------------------------------


def _list_argument(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if not items or unknown:
            raise argparse.ArgumentTypeError(
                f"invalid list {text!r}: expected comma-separated items of {', '.join(allowed)}"
            )
        return items

    return parse


def _sizes_argument(text: str) -> list[str]:
    labels = [item.strip() for item in text.split(",") if item.strip()]
    for label in labels:
        try:
            parse_size(label)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error
    if not labels:
        raise argparse.ArgumentTypeError("expected at least one size, for example 100MiB")
    return labels


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time cp, the pandas baseline and prepflow's processing step on generated "
        "employee CSV files, and report median wall time and peak RSS.",
    )

    # What to run.
    parser.add_argument(
        "--sizes",
        type=_sizes_argument,
        default=["100MiB"],
        help="comma-separated input sizes, e.g. 100MiB,1GiB (default: 100MiB)",
    )
    parser.add_argument(
        "--recipes",
        type=_list_argument(RECIPES),
        default=list(RECIPES),
        help="comma-separated recipes: default, employees (default: both)",
    )
    parser.add_argument(
        "--tools",
        type=_list_argument(TOOLS),
        default=list(TOOLS),
        help="comma-separated tools: cp, pandas, prepflow (default: all)",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per tool (default: 3)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed runs per tool before the timed ones (default: 0)",
    )
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default: 7)")

    # Where inputs and outputs go.
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/tmp/bench-data"),
        help="folder of generated inputs, reused between invocations (default: /tmp/bench-data)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/bench-step"),
        help="folder for input links and run outputs, on the same file system "
        "as --data-dir (default: /tmp/bench-step)",
    )
    parser.add_argument(
        "--regenerate", action="store_true", help="generate the inputs again even if they exist"
    )

    # How the commands run.
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for pandas and prepflow (default: this one)",
    )
    parser.add_argument(
        "--employees-recipe",
        type=Path,
        default=EMPLOYEES_RECIPE,
        help="recipe file for the employees recipe (default: %(default)s)",
    )
    parser.add_argument(
        "--legacy-step",
        action="store_true",
        help="run the step with --input and --output only, as the step before "
        "recipes accepts (default recipe only)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds after which one run is killed (default: 1800)",
    )

    # How results are printed.
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print facts and the table as Markdown, ready to paste",
    )
    parser.add_argument("--json-out", type=Path, help="also write every run's values here")

    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be 1 or more, got {args.runs}")
    if args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, got {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        if "prepflow" in args.tools:
            check_prepflow(args.python, args.recipes, args.legacy_step, args.employees_recipe)
        args.work_dir.mkdir(parents=True, exist_ok=True)
        inputs = [prepare_input(label, args) for label in args.sizes]
        facts = describe_context(args, inputs)
        results = [series for source in inputs for series in run_input(source, args)]
    except BenchError as error:
        print(f"step_bench: error: {error}", file=sys.stderr)
        return 1

    facts.update(describe_runs(inputs[0], results))
    rows = table_rows(results, args.recipes)
    if args.markdown:
        print("\n".join(f"- {name}: {value}" for name, value in facts.items()))
        print()
        print(format_markdown(rows))
    else:
        print("\n".join(f"{name}: {value}" for name, value in facts.items()))
        print()
        print(format_text(rows))
    if args.json_out:
        record = {"facts": facts, "series": [asdict(series) for series in results]}
        args.json_out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
