"""``prepflow init``: write a starter recipe, an example script and sample data into a folder.

The files ship inside the package (``prepflow/starter_files``), so ``init`` works from an
installed wheel as well as from a source checkout.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from prepflow.errors import ConfigurationError

# Written in this order; each name is also the file's name in the package.
STARTER_FILES = ("recipe.yaml", "preprocessing_script.py", "employees.csv")


def write_starter(folder: Path, *, force: bool) -> list[Path]:
    """Write the starter files into ``folder`` (created if needed); return their paths.

    Raises ConfigurationError naming every file that exists already, before writing any,
    unless ``force`` allows replacing them.
    """
    targets = [folder / name for name in STARTER_FILES]
    existing = [str(path) for path in targets if path.exists() or path.is_symlink()]
    if existing and not force:
        raise ConfigurationError(
            f"not overwriting existing file(s): {', '.join(existing)}; move them away, choose "
            "another folder, or pass --force to replace them"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(f"cannot create folder {folder}: {error.strerror}") from error
    source = resources.files("prepflow") / "starter_files"
    for name, target in zip(STARTER_FILES, targets, strict=True):
        _write(target, source.joinpath(name).read_bytes(), force=force)
    return targets


def _write(target: Path, body: bytes, *, force: bool) -> None:
    # O_EXCL closes the gap between the check above and the write: a file that appears in
    # between is not replaced without --force.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    if force and target.is_symlink():
        # Replace the link itself instead of writing through it to wherever it points.
        target.unlink()
    try:
        descriptor = os.open(target, flags, 0o666)
    except FileExistsError as error:
        raise ConfigurationError(
            f"not overwriting existing file: {target}; pass --force to replace it"
        ) from error
    except OSError as error:
        raise ConfigurationError(f"cannot write {target}: {error.strerror}") from error
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(body)
