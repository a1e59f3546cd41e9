"""A little disk space kept aside, so a run can still record that the disk is full.

When a big checkpoint fills the disk, the run must still end as ``failed`` with an error
saying so; but recording that is itself a (tiny) write, which a full disk refuses too.
So a store keeps a small file beside it (``<store>.nbflow-reserve``). When a write of
events fails for want of space, the reserve is deleted and the write tried once more; it
is made again at a later open, once there is room.
"""

from __future__ import annotations

import contextlib
import os

RESERVE_SUFFIX = ".nbflow-reserve"
RESERVE_BYTES = 4 * 1024 * 1024  # several of DuckDB's 256 KB blocks, for the log's growth


def keep_reserve(path: str) -> None:
    """Make the reserve beside ``path`` if it is missing and there is room for it."""
    name = path + RESERVE_SUFFIX
    if os.path.exists(name):
        return
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError:  # made meanwhile by another store, or a read-only folder
        return
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)  # really allocated, not a sparse file
    except OSError:  # no room (or no fallocate here): try again at a later open
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
        return
    os.close(fd)


def use_reserve(path: str) -> bool:
    """Give the reserve's space back to the disk; whether there was one to give."""
    try:
        os.unlink(path + RESERVE_SUFFIX)
    except OSError:
        return False
    return True
