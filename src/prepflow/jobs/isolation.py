"""The isolation of a job's command: its own ``/opt/ml``, and the end of all its processes.

``namespace`` (Linux): the command runs in private mount and PID namespaces made by util-linux
``unshare``. Inside, ``prepflow.jobs.sandbox`` lays the job's host folder over ``/opt/ml``,
hides prepflow's home, and runs the command as its child, so an unmodified script reads
``/opt/ml/processing/input`` while the machine's own ``/opt`` stays untouched. The sandbox is
PID 1 of the namespace: when it dies, the kernel kills every process the job left behind.
Without root, ``--user --map-root-user`` adds a user namespace.

``none``: the command runs as a plain process with ``PREPFLOW_ML_ROOT`` naming the host
folder, and arguments naming a path under /opt/ml are mapped into it. prepflow's built-in step
and scripts that read ``PREPFLOW_ML_ROOT`` work this way. ``auto`` picks ``namespace`` where
it can. Where it cannot, it runs the built-in step as in ``none`` and rejects a user script
with an error that names what to do instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prepflow.errors import IsolationError, JobSpecError
from prepflow.jobs.spec import ProcessingJobSpec

logger = logging.getLogger(__name__)

ML_ROOT_VARIABLE = "PREPFLOW_ML_ROOT"
BUILT_IN_STEP_MODULE = "prepflow.processing"
# Host variables a container would also have; everything else of the host stays out.
PASSED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH")


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    # True when argv starts the namespaces, whose PID 1 forwards SIGTERM to the command.
    namespaced: bool


def build_command(
    spec: ProcessingJobSpec, root: Path, *, mode: str, hidden: tuple[Path, ...] = ()
) -> Command:
    """Return the argv, environment and folder that run the job's container command.

    ``hidden`` folders (prepflow's home) are made invisible to the job in namespace mode.
    """
    argv = _container_argv(spec)
    env = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(spec.environment)
    chosen = resolve_mode(mode, argv)
    if chosen == "none":
        env[ML_ROOT_VARIABLE] = str(root)
        argv = [_on_host(root, item) for item in argv]
        return Command(argv=argv, env=env, cwd=str(root), namespaced=False)
    prefix = ["unshare", "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc"]
    if os.geteuid() != 0:
        prefix[1:1] = ["--user", "--map-root-user"]
    sandbox = [sys.executable, "-m", "prepflow.jobs.sandbox", "--ml", str(root)]
    sandbox += ["--overlay", str(root.parent / "overlay")]
    for folder in hidden:
        sandbox += ["--hide", str(folder)]
    return Command(argv=[*prefix, *sandbox, "--", *argv], env=env, cwd="/", namespaced=True)


def _on_host(root: Path, item: str) -> str:
    """Map an argument naming a path under /opt/ml (a script's path) to the job's folder."""
    container_root = "/opt/ml/"
    if item.startswith(container_root):
        return str(root / item[len(container_root) :])
    return item


def resolve_mode(mode: str, argv: list[str]) -> str:
    """Pick ``namespace`` or ``none`` for ``mode`` (auto, namespace or none)."""
    if mode == "none":
        return "none"
    problem = namespace_problem()
    if problem is None:
        return "namespace"
    if mode == "auto" and runs_built_in_step(argv):
        logger.info(
            "mount namespaces unavailable (%s); running the built-in step directly", problem
        )
        return "none"
    raise IsolationError(
        f"cannot run {' '.join(argv)!r} with its own /opt/ml: {problem}. Run prepflow on Linux "
        "as root or with unprivileged user namespaces enabled (sysctl "
        "kernel.unprivileged_userns_clone=1), or use the built-in step, or make the script "
        f"read its paths below ${ML_ROOT_VARIABLE} and set PREPFLOW_ISOLATION=none"
    )


@functools.cache
def namespace_problem() -> str | None:
    """Return why private mount namespaces cannot be used here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return f"mount namespaces exist on Linux only, this is {sys.platform}"
    if shutil.which("unshare") is None:
        return "the util-linux 'unshare' command is not installed"
    if not Path("/opt").is_dir():
        return "/opt does not exist, so /opt/ml cannot be laid over it"
    probe = ["unshare", "--mount", "--pid", "--fork", "true"]
    if os.geteuid() != 0:
        probe[1:1] = ["--user", "--map-root-user"]
    try:
        result = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"'unshare' failed to run: {error}"
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip()
        return f"'unshare' was refused: {detail or 'exit code ' + str(result.returncode)}"
    return None


def runs_built_in_step(argv: list[str]) -> bool:
    return len(argv) >= 3 and argv[1] == "-m" and argv[2] == BUILT_IN_STEP_MODULE


def kill_tree(process: subprocess.Popen[bytes], *, namespaced: bool, grace_seconds: float) -> None:
    """End the job: SIGTERM to the command, then SIGKILL to all after ``grace_seconds``.

    In namespace mode SIGTERM goes to the namespace's init (the sandbox), which forwards it:
    ``unshare`` would die of it at once and take the namespace with it, leaving no grace.
    Its SIGKILL then ends the namespace, which ends every process in it.
    """
    children = _children(process.pid) if namespaced else []
    if children:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    else:
        _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def kill_group(group: int) -> None:
    """SIGKILL a job's process group left behind by a runner that died."""
    _signal_group(group, signal.SIGKILL)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux PR_SET_PDEATHSIG).

    Used between fork and exec of a job's command, so a killed supervisor takes the job with
    it. Elsewhere it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(item) for item in text.split()]


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _container_argv(spec: ProcessingJobSpec) -> list[str]:
    app = spec.app_specification
    if not app.container_entrypoint:
        raise JobSpecError(
            "the local runner needs ContainerEntrypoint: it has no image to take a default "
            "command from"
        )
    argv = [*app.container_entrypoint, *(app.container_arguments or [])]
    # A processing image runs "python3 script.py" with its own interpreter; here that is the
    # interpreter prepflow runs in, which has prepflow and its dependencies installed.
    if argv[0] in ("python3", "python"):
        argv[0] = sys.executable
    return argv
