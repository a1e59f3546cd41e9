"""Making a folder read-only for a child process, for root too.

Tests run as root, for whom ``chmod`` stops nothing: the folder is made read-only by a
read-only bind mount in a mount namespace of the child's own (``unshare``), which the
kernel enforces for root too and which vanishes with the child. Run as another user
without namespaces, ``chmod`` does the same.
"""

from __future__ import annotations

import base64
import os
import pickle
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def can_unshare() -> bool:
    """Whether this process may make a mount namespace of its own (``unshare -rm``)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


@contextmanager
def read_only(folder: Path) -> Iterator[Callable[[list[str]], list[str]]]:
    """A function turning a command into one under which ``folder`` (and the files in it)
    cannot be written."""
    if can_unshare():
        # A bind mount of the folder onto itself, read-only, seen by the child alone.
        mount = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        yield lambda command: ["unshare", "-rm", "sh", "-c", mount, str(folder), *command]
        return
    if os.geteuid() == 0:
        raise AssertionError(
            "this test needs `unshare` (util-linux) with mount namespaces to make a folder "
            "read-only for root; chmod does not stop root"
        )
    modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
    try:
        for path in modes:
            path.chmod(stat.S_IMODE(modes[path]) & ~0o222)
        yield lambda command: command
    finally:
        for path, mode in modes.items():
            path.chmod(stat.S_IMODE(mode))


_RAISING = """
import base64, pickle, sys
code = sys.argv.pop(1)
try:
    exec(compile(code, "<child>", "exec"), {"__name__": "__main__"})
except Exception as exc:
    print(base64.b64encode(pickle.dumps(exc)).decode())
"""


def error_in_read_only_child(folder: Path, code: str, *args: str) -> BaseException:
    """The exception Python ``code`` (given ``args`` as ``sys.argv[1:]``) raises in a child
    process for which ``folder`` is read-only."""
    with read_only(folder) as wrap:
        done = subprocess.run(
            wrap([sys.executable, "-c", _RAISING, code, *args]),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0 and done.stdout.strip(), done.stderr or "it raised nothing"
    error = pickle.loads(base64.b64decode(done.stdout.strip().splitlines()[-1]))
    assert isinstance(error, BaseException)
    return error
