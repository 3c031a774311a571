"""Run a command as a child process and measure its wall time and peak RSS.

Wall time is ``time.perf_counter`` around the child process. Peak RSS comes from
``/usr/bin/time -v`` where that program exists, else from the rusage that ``os.wait4``
returns for the child. Both cover the command and the descendants it waited for.

A descendant that the command did not wait for is re-parented when the command exits. After
``enable_subreaper`` (Linux ``prctl``) it is re-parented to this process, and ``measure``
reaps it and reads its rusage, which includes the descendants it waited for in turn.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = Path("/usr/bin/time")
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


class BenchError(Exception):
    """A command failed, timed out, or returned something other than expected."""


@dataclass
class Measurement:
    """One timed child process."""

    wall_s: float
    returncode: int
    stdout: str
    stderr: str
    # Maximum RSS of the command and the descendants it waited for, in KiB.
    rss_kib: int | None
    # Maximum RSS of descendants that outlived the command (reaped here as orphans), in KiB.
    orphan_rss_kib: int | None = None
    # Seconds from the command's exit until its last orphan exited.
    orphan_tail_s: float = 0.0
    started_epoch: float = 0.0
    ended_epoch: float = 0.0


def enable_subreaper() -> bool:
    """Make this process adopt orphaned descendants. Return False where Linux prctl is missing."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def measure(
    argv: Sequence[str], *, env: dict[str, str], timeout_s: float, reap_orphans: bool
) -> Measurement:
    """Run ``argv`` once and return its wall time, output and peak RSS.

    Raises BenchError when the command runs longer than ``timeout_s`` (its process group is
    killed) or when its orphans are still running ``timeout_s`` after it exited.
    """
    with tempfile.TemporaryDirectory(prefix="prepflow-bench-io-") as scratch:
        out_path, err_path, time_path = (Path(scratch, n) for n in ("stdout", "stderr", "time"))
        command = list(argv)
        if GNU_TIME.exists():
            command = [str(GNU_TIME), "-v", "-o", str(time_path), *command]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            started_epoch = time.time()
            started = time.perf_counter()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
            returncode, usage, timed_out = _wait_with_timeout(process.pid, timeout_s)
            wall_s = time.perf_counter() - started
            ended_epoch = time.time()
        if timed_out:
            raise BenchError(f"{' '.join(argv)} timed out after {timeout_s:g} s and was killed")
        rss_kib = _gnu_time_max_rss(time_path) if GNU_TIME.exists() else usage.ru_maxrss
        result = Measurement(
            wall_s=wall_s,
            returncode=returncode,
            stdout=out_path.read_text(errors="replace"),
            stderr=err_path.read_text(errors="replace"),
            rss_kib=rss_kib,
            started_epoch=started_epoch,
            ended_epoch=ended_epoch,
        )
    if reap_orphans:
        result.orphan_rss_kib, result.orphan_tail_s = _reap_orphans(timeout_s)
    return result


def _wait_with_timeout(pid: int, timeout_s: float) -> tuple[int, resource.struct_rusage, bool]:
    # A blocking wait4 returns at the child's exit with no polling delay. A timer thread
    # kills the process group if the child hangs.
    expired = threading.Event()

    def kill_group() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill_group)
    timer.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    finally:
        timer.cancel()
    return os.waitstatus_to_exitcode(status), usage, expired.is_set()


def _gnu_time_max_rss(path: Path) -> int | None:
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", path.read_text())
    return int(match.group(1)) if match else None


def _reap_orphans(timeout_s: float) -> tuple[int | None, float]:
    """Wait for every adopted orphan to exit, and return their maximum RSS in KiB and the wait."""
    started = time.perf_counter()
    peak: int | None = None
    while True:
        try:
            pid, _, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return peak, time.perf_counter() - started
        if pid:
            peak = max(peak or 0, usage.ru_maxrss)
            continue
        if time.perf_counter() - started > timeout_s:
            raise BenchError(
                f"processes left by the command are still running {timeout_s:g} s after it "
                f"exited. List them with 'ps --ppid {os.getpid()}'"
            )
        time.sleep(0.002)


def measure_command(argv: Sequence[str], runs: int, timeout_s: float) -> list[Measurement]:
    """Time a short command ``runs`` times, and raise BenchError if any run fails."""
    results = []
    for _ in range(runs):
        measurement = measure(argv, env=dict(os.environ), timeout_s=timeout_s, reap_orphans=False)
        if measurement.returncode != 0:
            raise BenchError(
                f"{' '.join(argv)} exited with code {measurement.returncode}: "
                f"{measurement.stderr.strip()}"
            )
        results.append(measurement)
    return results
