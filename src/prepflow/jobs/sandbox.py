"""Inside the job's namespaces: lay the job folder over /opt/ml, then run the command.

Usage (run by the local runner through ``unshare``, never by hand)::

    python -m prepflow.jobs.sandbox --ml HOST_ML --overlay FOLDER [--hide FOLDER]... -- COMMAND

Inside the namespace, an overlay makes /opt writable: its lower layer is the real /opt, its
upper and work folders lie in the job folder. Where the kernel refuses the overlay, a tmpfs
covers /opt instead and the original entries are bound back in. Then the job folder is
bind-mounted on /opt/ml, and each ``--hide`` folder (prepflow's home, with the raw data) is
covered by an empty read-only tmpfs, so the job cannot read or change it. Nothing of this is
visible outside the namespace.

This process stays as PID 1 of the job's PID namespace: it forwards SIGTERM and SIGINT to the
command, reaps orphans, and exits with the command's exit code. A command that is PID 1
itself would ignore SIGTERM, because the kernel delivers no default-action signal to a
namespace's init. This module imports only the standard library, to keep its start-up short.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys

MS_RDONLY = 1
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 4096
MS_REC = 16384
EXIT_SETUP_FAILED = 125
EXIT_NOT_FOUND = 127
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

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


def _set_up(ml_folder: str, overlay: str, hidden: list[str]) -> None:
    # Opened before /opt changes, so a job folder under /opt is bound from the host's disk
    # and not from the overlay, whose upper layer is thrown away after the job.
    ml_handle = os.open(ml_folder, os.O_RDONLY | os.O_DIRECTORY)
    _writable_opt(overlay)
    os.makedirs("/opt/ml", exist_ok=True)
    _mount(f"/proc/self/fd/{ml_handle}", "/opt/ml", None, MS_BIND | MS_REC, None)
    os.close(ml_handle)
    for folder in hidden:
        if os.path.isdir(folder):
            _mount("tmpfs", folder, "tmpfs", MS_RDONLY, "mode=0555,size=4k")
    os.chdir("/")


def _lock_mounts() -> None:
    """Move into a new user and mount namespace, where the mounts above cannot be undone.

    Mounts inherited from a more privileged mount namespace are locked (mount_namespaces(7)),
    so the command cannot unmount the tmpfs over prepflow's home to reach the raw data. It
    stays user 0, mapped to the same user outside.
    """
    user, group = os.geteuid(), os.getegid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare failed: {os.strerror(errno)}")
    with open("/proc/self/setgroups", "w") as handle:
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"0 {user} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"0 {group} 1")


def _run_as_init(command: list[str]) -> int:
    child = os.fork()
    if child == 0:
        try:
            _lock_mounts()
        except OSError as error:
            # NOTE: without a nested user namespace the command could unmount what hides
            # prepflow's home; it still does not see it by accident.
            print(
                f"prepflow sandbox: warning: cannot lock the job's mounts: {error}", file=sys.stderr
            )
        try:
            os.execvpe(command[0], command, os.environ)
        except OSError as error:
            print(f"prepflow sandbox: cannot run {command[0]!r}: {error}", file=sys.stderr)
        os._exit(EXIT_NOT_FOUND)

    def forward(received: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, received)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            # A shell reports death by signal N as 128 + N; so does this init.
            return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m prepflow.jobs.sandbox")
    parser.add_argument("--ml", required=True)
    parser.add_argument("--overlay", required=True)
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        _set_up(args.ml, args.overlay, args.hide)
    except OSError as error:
        print(f"prepflow sandbox: cannot set up /opt/ml: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    return _run_as_init(args.command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
