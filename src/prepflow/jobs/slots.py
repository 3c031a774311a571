"""A counting semaphore across processes: N lock files, one per slot, held with ``flock``.

The kernel releases a slot when its holder exits, also after ``kill -9``, so a crashed job
never keeps a slot.
"""

from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MAX_BACKOFF_SECONDS = 1.0


class Cancelled(Exception):
    """The wait for a slot was given up because ``cancelled()`` became true."""


@contextmanager
def acquire(
    folder: Path,
    count: int,
    *,
    on_wait: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[int]:
    """Hold one of ``count`` slots for the block; wait with backoff while all are taken."""
    folder.mkdir(parents=True, exist_ok=True)
    delay = 0.05
    announced = False
    while True:
        slot = _try_any(folder, count)
        if slot is not None:
            break
        if cancelled():
            raise Cancelled()
        if not announced and on_wait is not None:
            on_wait(f"waiting for a free slot: all {count} local job slots are busy")
            announced = True
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_BACKOFF_SECONDS)
    number, descriptor = slot
    try:
        yield number
    finally:
        os.close(descriptor)


def _try_any(folder: Path, count: int) -> tuple[int, int] | None:
    start = random.randrange(count)
    for offset in range(count):
        number = (start + offset) % count
        descriptor = os.open(folder / f"slot-{number}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        return number, descriptor
    return None
