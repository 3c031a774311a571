"""The built-in step: ``python -m prepflow.processing [--input DIR] [--output DIR]``.

Exit codes: 0 success; 1 the input was rejected (the reason is the last line of stderr and
the ``error`` field of the ExitMessage); 2 wrong arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from prepflow.errors import ProcessingError
from prepflow.processing import reference
from prepflow.processing.paths import DATA_SUFFIXES, StepPaths, container_paths

logger = logging.getLogger("prepflow.processing")

# ExitMessage keeps the first 1 KB of /opt/ml/output/message; the error must fit in it.
MAX_ERROR_CHARS = 900


def run(paths: StepPaths) -> dict[str, object]:
    """Process every data file under the input folder; return the ExitMessage fields."""
    sources = find_data_files(paths)
    targets = plan_outputs(paths, sources)
    started = datetime.now(UTC)
    results = [
        reference.process_file(source, target, timestamp=started)
        for source, target in targets.items()
    ]
    return {
        "rows_in": sum(r.rows_in for r in results),
        "rows_out": sum(r.rows_out for r in results),
        "files": len(results),
    }


def find_data_files(paths: StepPaths) -> list[Path]:
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
    if not found:
        raise ProcessingError(
            f"no data files ({', '.join(DATA_SUFFIXES)}) under {str(paths.input_dir)!r}"
        )
    return found


def plan_outputs(paths: StepPaths, sources: list[Path]) -> dict[Path, Path]:
    """Map each source to its output path, raising before any write if two share one."""
    targets: dict[Path, Path] = {}
    writers: dict[Path, Path] = {}
    for source in sources:
        relative = source.relative_to(paths.input_dir)
        target = paths.output_dir / relative.parent / reference.output_name(source)
        if target in writers:
            raise ProcessingError(
                f"input files {str(writers[target])!r} and {str(relative)!r} would both be "
                f"written to {target.name!r}; rename one of them"
            )
        writers[target] = relative
        targets[source] = target
    return targets


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m prepflow.processing")
    parser.add_argument("--input", type=Path, help="folder of data files (default: the job's)")
    parser.add_argument(
        "--output", type=Path, help="folder for processed files (default: the job's)"
    )
    args = parser.parse_args(argv)

    paths = container_paths()
    if args.input or args.output:
        paths = StepPaths(
            input_dir=args.input or paths.input_dir,
            output_dir=args.output or paths.output_dir,
            message_file=None,
        )
    try:
        message: dict[str, object] = run(paths)
        code = 0
    except ProcessingError as error:
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
