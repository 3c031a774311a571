"""Inside the job's namespaces: lay the job folder over /opt/ml, then exec the command.

Usage (run by the local runner through ``unshare``, never by hand):
``python -m prepflow.jobs.sandbox HOST_ML_FOLDER OVERLAY_FOLDER -- COMMAND...``

Inside the namespace, an overlay makes /opt writable: its lower layer is the real /opt, its
upper and work folders lie in the job folder. Where the kernel refuses the overlay, a tmpfs
covers /opt instead and the original entries are bound back in. Then the job folder is
bind-mounted on /opt/ml. Nothing of
this is visible outside the namespace. This module imports only the standard library, to keep
its start-up short.
"""

from __future__ import annotations

import ctypes
import os
import sys

MS_BIND = 4096
MS_REC = 16384
EXIT_SETUP_FAILED = 125
EXIT_NOT_FOUND = 127

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    result = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target} failed: {os.strerror(errno)}")


def _writable_opt(overlay: str) -> None:
    upper, work = os.path.join(overlay, "upper"), os.path.join(overlay, "work")
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    try:
        _mount("overlay", "/opt", "overlay", 0, f"lowerdir=/opt,upperdir={upper},workdir={work}")
        return
    except OSError:
        pass
    # Overlay is refused on some file systems (an overlay as upper layer, for one).
    original = os.open("/opt", os.O_RDONLY | os.O_DIRECTORY)
    entries = os.listdir(original)
    _mount("tmpfs", "/opt", "tmpfs", 0, "mode=0755")
    for name in entries:
        source = f"/proc/self/fd/{original}/{name}"
        target = os.path.join("/opt", name)
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            open(target, "w").close()
        _mount(source, target, None, MS_BIND | MS_REC, None)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print(
            "usage: python -m prepflow.jobs.sandbox HOST_ML OVERLAY -- COMMAND...", file=sys.stderr
        )
        return EXIT_SETUP_FAILED
    host_ml, overlay, command = argv[0], argv[1], argv[3:]
    try:
        _writable_opt(overlay)
        os.makedirs("/opt/ml", exist_ok=True)
        _mount(host_ml, "/opt/ml", None, MS_BIND | MS_REC, None)
        os.chdir("/")
    except OSError as error:
        print(f"prepflow sandbox: cannot set up /opt/ml: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    try:
        os.execvpe(command[0], command, os.environ)
    except OSError as error:
        print(f"prepflow sandbox: cannot run {command[0]!r}: {error}", file=sys.stderr)
    return EXIT_NOT_FOUND


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
