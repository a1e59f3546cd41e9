"""Which files a step opens for reading while it runs: an audit hook on ``open``.

``open()``, ``io.open``, ``os.open``, ``pathlib``'s readers, and what calls them (pandas'
``read_csv`` and ``read_json``, ``json.load`` on an opened file, ``numpy.load``,
``pickle.load``) raise the ``open`` audit event. One hook is installed per process, the
first time a step is recorded; audit hooks cannot be removed, so outside a recording it
returns at once. The step being recorded is found through a context variable: each
executor's task sets it where the step runs (the driver's thread, a pool thread, a
worker process, a Dask worker thread), and a step's timeout thread copies it, so an open
is always counted for the step that made it.

The hook only notes what was opened; filtering and hashing happen once the step returns
(:meth:`Recording.files`), so a step that opens many files pays little while it runs.

Not seen: files read by native code that does not go through Python's ``open`` (DuckDB's
and pyarrow's own readers, ``pd.read_parquet``, memory maps made in C), and files opened
in threads the step starts without copying its context. Declare those with ``inputs=``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nbflow.engine.files import file_hashes

__all__ = ["ReadSpec", "Recording", "ignored_prefixes", "recording"]

_CURRENT: contextvars.ContextVar[Recording | None] = contextvars.ContextVar(
    "nbflow_recording", default=None
)
_INSTALLED = False
_INSTALL_LOCK = threading.Lock()
_cwd: str | None = None  # the current directory, forgotten on every chdir
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _hook(event: str, args: tuple[Any, ...]) -> None:
    # Called for every audit event of the process: the common case must cost nothing.
    if event != "open":
        if event == "os.chdir":
            global _cwd
            _cwd = None
        return
    recording = _CURRENT.get()
    if recording is not None:
        recording.opened.append((args, _cwd or _current_dir()))


def _current_dir() -> str:
    global _cwd
    try:
        _cwd = os.getcwd()
    except OSError:  # the directory was removed
        return ""
    return _cwd


def _install() -> None:
    global _INSTALLED
    with _INSTALL_LOCK:
        if not _INSTALLED:
            sys.addaudithook(_hook)
            _INSTALLED = True


@dataclass(frozen=True)
class ReadSpec:
    """What a step's recording leaves out, besides the interpreter's own files: the store
    file, and the files the step declares (already in its key)."""

    exclude: tuple[str, ...] = ()


@dataclass
class Recording:
    """The opens one step made (raw audit arguments and the directory they were made in)."""

    spec: ReadSpec
    opened: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)

    def paths(self) -> list[str]:
        """The files the step opened for reading only, absolute, each once, in the order
        first opened; files it also opened for writing (its own outputs), and the
        interpreter's, the store's and declared ones, left out."""
        read: dict[str, None] = {}
        written: set[str] = set()
        ignored = ignored_prefixes()
        excluded = {os.path.normpath(os.path.abspath(p)) for p in self.spec.exclude}
        for args, cwd in list(self.opened):
            path = _absolute(args[0], cwd)
            if path is None:
                continue
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            if flags & _WRITE_FLAGS:
                written.add(path)
            elif path not in excluded and not path.startswith(ignored) and not _compiled(path):
                read.setdefault(path, None)
        return [p for p in read if p not in written]

    def files(self) -> dict[str, str | None]:
        """The files the step read, each with its content hash now (None: missing);
        folders it opened (``os.open`` on a directory) left out."""
        return file_hashes(self.paths(), skip_folders=True)


def _absolute(raw: Any, cwd: str) -> str | None:
    if isinstance(raw, int):  # an open file descriptor: already counted when opened
        return None
    try:
        path = os.fsdecode(os.fspath(raw))
    except (TypeError, ValueError):
        return None
    if not os.path.isabs(path):
        if not cwd:
            return None
        path = os.path.join(cwd, path)
    return os.path.normpath(path)


def _compiled(path: str) -> bool:
    return path.endswith((".pyc", ".pyo")) and f"{os.sep}__pycache__{os.sep}" in path


_IGNORED: tuple[str, ...] | None = None


def ignored_prefixes() -> tuple[str, ...]:
    """Folders whose files are never recorded: the interpreter's (``sys.prefix``, the
    standard library, site-packages), nbflow's own (an editable install lives outside
    site-packages, and a step may import a part of nbflow lazily), the user's cache
    folder, and ``/dev``, ``/proc``, ``/sys``, ``/run``."""
    global _IGNORED
    if _IGNORED is None:
        folders: set[str] = {
            sys.prefix,
            sys.base_prefix,
            sys.exec_prefix,
            sys.base_exec_prefix,
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # nbflow/
        }
        for name in ("stdlib", "platstdlib", "purelib", "platlib"):
            with _suppress():
                folders.add(sysconfig.get_path(name))
        with _suppress():
            folders.update(site.getsitepackages())
        with _suppress():
            folders.add(site.getusersitepackages())
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folders.add(cache)
        if os.name == "posix":
            folders.update({"/dev", "/proc", "/sys", "/run"})
        _IGNORED = tuple(
            sorted({os.path.normpath(os.path.abspath(f)) + os.sep for f in folders if f})
        )
    return _IGNORED


def _suppress() -> contextlib.suppress:
    # A missing install scheme or site function: that folder is not known here.
    return contextlib.suppress(Exception)


@contextmanager
def recording(spec: ReadSpec) -> Iterator[Recording]:
    """Record the files opened in this context (this thread, and what copies its
    context) while the block runs."""
    _install()
    current = Recording(spec)
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


def spec_for(store_path: str | None, declared: Collection[str]) -> ReadSpec:
    """The :class:`ReadSpec` of a step whose store lives at ``store_path``."""
    exclude = list(declared)
    if store_path and store_path != ":memory:":
        exclude += [store_path, store_path + ".wal"]
    return ReadSpec(tuple(exclude))
