"""The container command of one host of a local job: its process, log pumps and stderr tail."""

from __future__ import annotations

import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from prepflow.jobs import isolation
from prepflow.jobs.spec import MAX_REASON_LENGTH

STDERR_TAIL_LINES = 20
# Enough for 20 long lines; the failure reason keeps at most 1 KB of it anyway.
STDERR_TAIL_BYTES = 16_384
PUMP_CHUNK_BYTES = 65_536


@dataclass
class HostRun:
    """One host's running command (``algo-1`` ...), started by ``start``."""

    host: str
    root: Path
    process: subprocess.Popen[bytes]
    pumps: list[threading.Thread] = field(default_factory=list)
    stderr_tail: bytearray = field(default_factory=bytearray)

    def stderr_lines(self) -> str:
        text = self.stderr_tail.decode("utf-8", "replace")
        lines = text.splitlines()[-STDERR_TAIL_LINES:]
        return "\n".join(line.rstrip() for line in lines).strip()

    def algorithm_error(self, *, name_host: bool) -> str:
        """Return the FailureReason of a failed command; ``name_host`` on a job with several."""
        returncode = self.process.returncode
        if returncode < 0:
            name = signal.Signals(-returncode).name
            cause = f"killed by signal {name} (exit code {128 - returncode})"
        else:
            cause = f"exit code: {returncode}"
        if name_host:
            cause = f"host {self.host} failed with {cause}"
        tail = self.stderr_lines()
        if not tail:
            return f"AlgorithmError: {cause}. The process wrote nothing to stderr."
        head = f"AlgorithmError: {cause}. Last lines of stderr:\n"
        room = MAX_REASON_LENGTH - len(head)
        return head + (tail if len(tail) <= room else "..." + tail[-(room - 3) :])


def start(host: str, root: Path, command: isolation.Command, log: BinaryIO) -> HostRun:
    """Start ``command`` for ``host``, copying its stdout and stderr to ``log`` as they come.

    Raises OSError when the command cannot be started.
    """
    process = subprocess.Popen(
        command.argv,
        env=command.env,
        cwd=command.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=isolation.die_with_parent,
    )
    run = HostRun(host, root, process)
    run.pumps = _start_pumps(run, log)
    return run


def _start_pumps(run: HostRun, log: BinaryIO) -> list[threading.Thread]:
    """Copy stdout and stderr to the host's log, keeping the end of stderr.

    Reads in chunks rather than lines, so a single huge line never has to fit in memory.
    """
    lock = threading.Lock()

    def pump(stream: BinaryIO, keep_tail: bool) -> None:
        while chunk := stream.read1(PUMP_CHUNK_BYTES):  # type: ignore[attr-defined]
            with lock:
                log.write(chunk)
                log.flush()
            if keep_tail:
                run.stderr_tail.extend(chunk)
                del run.stderr_tail[:-STDERR_TAIL_BYTES]

    process = run.process
    assert process.stdout is not None and process.stderr is not None
    threads = [
        threading.Thread(target=pump, args=(process.stdout, False), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, True), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads
