"""The built-in step: ``python -m prepflow.processing [--input DIR] [--output DIR] [...]``.

Without options it uses the job's container paths. Exit codes: 0 success; 1 the input or the
recipe was rejected (the reason is the last line of stderr and the ``error`` field of the
ExitMessage); 2 wrong arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from prepflow.errors import ProcessingError, RecipeError
from prepflow.processing.engine import Engine, EnginePaths
from prepflow.processing.limits import ReadLimits
from prepflow.processing.paths import DATA_SUFFIXES, StepPaths, container_paths
from prepflow.processing.recipe import Recipe, check_shardable, default_recipe, load_recipe
from prepflow.processing.report import build_report, write_report

logger = logging.getLogger("prepflow.processing")

# ExitMessage keeps the first 1 KB of /opt/ml/output/message; the error must fit in it.
MAX_ERROR_CHARS = 900


def run(paths: StepPaths, limits: ReadLimits | None = None) -> dict[str, object]:
    """Process every data file under the input folder; return the ExitMessage fields."""
    recipe = load_recipe(paths.recipe_file) if paths.recipe_file else default_recipe()
    check_shardable(recipe, paths.host_count)
    sources = find_data_files(paths, allow_empty=paths.host_count > 1)
    if not sources:
        # A host of a sharded job may receive no objects when there are fewer than hosts.
        logger.info("host %s received no data files; it writes nothing", paths.current_host)
        return {"rows_in": 0, "rows_out": 0, "rows_rejected": 0, "rows_removed": 0, "files": 0}
    plan_outputs(paths, sources, recipe)
    work_dir = Path(tempfile.mkdtemp(prefix="prepflow-step-"))
    try:
        engine = Engine(
            recipe,
            EnginePaths(
                input_files=[(path, str(path.relative_to(paths.input_dir))) for path in sources],
                output_dir=paths.output_dir,
                rejected_dir=paths.rejected_dir,
                artifacts_dir=paths.artifacts_dir,
                fitted_file=paths.fitted_file,
                work_dir=work_dir,
                host=paths.current_host,
            ),
            limits=limits,
        )
        result = engine.run()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    rejected_location = (
        f"{result.rejected_file}" if result.rejected_file and paths.rejected_dir else None
    )
    if paths.report_dir is not None:
        report = build_report(
            result,
            recipe,
            job_name=paths.job_name,
            rejected_location=rejected_location,
            host=paths.current_host,
        )
        write_report(paths.report_dir, report, paths.current_host)
    logger.info(
        "%d rows in, %d out, %d rejected, %d removed by steps",
        result.rows_in, result.rows_out, result.rows_rejected, result.rows_removed,
    )  # fmt: skip
    return {
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
        "rows_rejected": result.rows_rejected,
        "rows_removed": result.rows_removed,
        "files": len(sources),
    }


def find_data_files(paths: StepPaths, *, allow_empty: bool = False) -> list[Path]:
    """Return the data files under the input folder; raise if there are none, unless allowed."""
    if not paths.input_dir.is_dir():
        raise ProcessingError(f"input folder {str(paths.input_dir)!r} does not exist")
    try:
        found = sorted(
            path
            for path in paths.input_dir.rglob("*")
            if path.is_file()
            and path.name.lower().endswith(DATA_SUFFIXES)
            and not any(path.is_relative_to(excluded) for excluded in paths.excluded)
        )
    except OSError as error:
        raise ProcessingError(
            f"cannot list input folder {str(paths.input_dir)!r}: {error}; check that the "
            "folder is readable"
        ) from error
    if not found and not allow_empty:
        raise ProcessingError(
            f"no data files ({', '.join(DATA_SUFFIXES)}) under {str(paths.input_dir)!r}"
        )
    return found


def plan_outputs(paths: StepPaths, sources: list[Path], recipe: Recipe | None = None) -> None:
    """Raise before any write when two inputs would be written to the same output file.

    Only the per-file mode writes an output per input; ``a.csv`` and ``a.jsonl`` both become
    ``processed_a`` with the output format's extension, so they clash.
    """
    from prepflow.processing.outputs import per_file_stem

    if recipe is not None and not recipe.output.per_file:
        return
    writers: dict[str, Path] = {}
    for source in sources:
        relative = source.relative_to(paths.input_dir)
        target = per_file_stem(str(relative))
        if target in writers:
            raise ProcessingError(
                f"input files {str(writers[target])!r} and {str(relative)!r} would both be "
                f"written to {Path(target).name!r} (plus the output format's extension); "
                "rename one of them"
            )
        writers[target] = relative


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m prepflow.processing")
    parser.add_argument("--input", type=Path, help="folder of data files (default: the job's)")
    parser.add_argument("--output", type=Path, help="folder for processed files")
    parser.add_argument("--recipe", type=Path, help="recipe YAML file (default: the job's)")
    parser.add_argument("--rejected", type=Path, help="folder for rejected.csv")
    parser.add_argument("--report", type=Path, help="folder for report.json and report.html")
    parser.add_argument("--artifacts", type=Path, help="folder for artifacts.json")
    parser.add_argument(
        "--fitted", type=Path, help="a previous run's artifacts.json to apply instead of fitting"
    )
    args = parser.parse_args(argv)

    paths = container_paths()
    if any(vars(args).values()):
        paths = replace(
            paths,
            input_dir=args.input or paths.input_dir,
            output_dir=args.output or paths.output_dir,
            recipe_file=args.recipe or paths.recipe_file,
            rejected_dir=args.rejected or paths.rejected_dir,
            report_dir=args.report or paths.report_dir,
            artifacts_dir=args.artifacts or paths.artifacts_dir,
            fitted_file=args.fitted or paths.fitted_file,
            message_file=None if args.input or args.output else paths.message_file,
        )
    try:
        message: dict[str, object] = run(paths, ReadLimits.from_environment(os.environ))
        code = 0
    except (ProcessingError, RecipeError) as error:
        message = {"error": str(error)[:MAX_ERROR_CHARS]}
        print(f"prepflow.processing: error: {error}", file=sys.stderr)
        code = 1
    _write_message(paths, message)
    return code


def _write_message(paths: StepPaths, message: dict[str, object]) -> None:
    if paths.message_file is None or not paths.message_file.parent.is_dir():
        return
    try:
        paths.message_file.write_text(json.dumps(message))
    except OSError as error:
        # The exit code and stderr still report the outcome without the message file.
        logger.warning("cannot write the ExitMessage to %s: %s", paths.message_file, error)


if __name__ == "__main__":
    sys.exit(main())
