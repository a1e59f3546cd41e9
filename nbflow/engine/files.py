"""Files as part of a step's cache key: content hashes with a stat fast path, the
snapshot of a step's declared ``inputs=``, and the key of an execution that read files.

A file's hash is xxh3-128 over its bytes. Hashing again is skipped only when the file's
(size, mtime_ns, ctime_ns, inode, device) are those it had when it was hashed *and* it
had not been modified within :data:`GRANULARITY_NS` of that hash: a file written in the
same timestamp tick as it was hashed could change again without its mtime moving, so
such an entry is never trusted (git's "racy clean" rule). mtime alone is never trusted.
"""

from __future__ import annotations

import glob
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import xxhash

from nbflow.json_text import compact_encoder

__all__ = [
    "GRANULARITY_NS",
    "declared_snapshot",
    "file_hash",
    "file_hashes",
    "reads_key",
]

#: The coarsest file timestamp granularity nbflow allows for (FAT's 2 s; ext4 and APFS
#: keep nanoseconds, but the kernel's clock for them ticks in milliseconds).
GRANULARITY_NS = 2_000_000_000
_CHUNK = 1 << 20
_GLOB_CHARS = frozenset("*?[")
_CANONICAL = compact_encoder(sort_keys=True)


@dataclass(frozen=True)
class _Seen:
    """What a file looked like when it was hashed, and the hash."""

    stat: tuple[int, int, int, int, int]
    hashed_at_ns: int
    digest: str


_SEEN: dict[str, _Seen] = {}
_SEEN_LOCK = threading.Lock()


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def trusted(seen: _Seen, st: os.stat_result) -> bool:
    """Whether a hash made when the file looked like ``seen`` still holds for ``st``."""
    if seen.stat != _signature(st):
        return False
    # Modified within the timestamp granularity of the hash: a later write in the same
    # tick would leave every field above unchanged (and size can stay the same too).
    latest = max(st.st_mtime_ns, st.st_ctime_ns)
    return latest + GRANULARITY_NS < seen.hashed_at_ns


def file_hash(path: str) -> str | None:
    """The content hash of the file at ``path``; None when it is missing, not a regular
    file, or unreadable (so a file that appears, or becomes readable, changes it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return _hash_of(path, st)


def _hash_of(path: str, st: os.stat_result) -> str | None:
    seen = _SEEN.get(path)
    if seen is not None and trusted(seen, st):
        return seen.digest
    hashed_at = time.time_ns()
    try:
        digest = _hash_bytes(path)
        after = os.stat(path)
    except OSError:
        return None
    if _signature(after) == _signature(st):  # not changing while it was read
        with _SEEN_LOCK:
            _SEEN[path] = _Seen(_signature(st), hashed_at, digest)
    return digest


def _hash_bytes(path: str) -> str:
    hasher = xxhash.xxh3_128()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            hasher.update(view[:n])
    return hasher.hexdigest()


def file_hashes(paths: Iterable[str], *, skip_folders: bool = False) -> dict[str, str | None]:
    """:func:`file_hash` of each path; with ``skip_folders``, folders are left out."""
    out: dict[str, str | None] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out[path] = None
            continue
        if stat.S_ISREG(st.st_mode):
            out[path] = _hash_of(path, st)
        elif not (skip_folders and stat.S_ISDIR(st.st_mode)):
            out[path] = None
    return out


def forget_hashes() -> None:
    """Drop every remembered hash (the next look at each file hashes it again)."""
    with _SEEN_LOCK:
        _SEEN.clear()


# -- declared inputs -----------------------------------------------------------------------


def declared_snapshot(patterns: Sequence[str]) -> dict[str, str | None]:
    """The files a step's ``inputs=`` name, each with its content hash, by path.

    A path names a file (None when it is missing); a directory stands for every file
    beneath it; a pattern with ``*``, ``?`` or ``[`` is a glob (``**`` recursive), and
    one that matches nothing is kept as ``{pattern: None}``, so that a file appearing
    changes the snapshot. Relative paths are taken from the current directory, and kept
    relative (the key does not change when the project folder moves).
    """
    if not patterns:
        return {}
    found: dict[str, str | None] = {}
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if _GLOB_CHARS.intersection(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            files = [m for m in matches if not os.path.isdir(m)]
            if not files:
                found.setdefault(pattern, None)
            for match in files:
                found[match] = file_hash(match)
        elif os.path.isdir(expanded):
            for match in _files_under(expanded):
                found[match] = file_hash(match)
        else:
            found[expanded] = file_hash(expanded)
    return found


def _files_under(folder: str) -> list[str]:
    out: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        out.extend(os.path.join(root, f) for f in sorted(files))
    return out


# -- the key of an execution that read files ---------------------------------------------------


def reads_key(key: str, read: Mapping[str, str | None]) -> str:
    """The cache key of an execution looked up under ``key`` that read the files
    ``read`` (path -> hash) while it ran: ``key`` itself when it read none.

    Each content of the files read gets a key of its own, so the store keeps, per key,
    the execution that saw exactly those files.
    """
    if not read:
        return key
    text = _CANONICAL({"key": key, "read": dict(read)})
    return xxhash.xxh3_128_hexdigest(text.encode())


def changed_files(then: Mapping[str, str | None], now: Mapping[str, str | None]) -> list[str]:
    """How the files ``now`` differ from ``then`` (path -> hash, None: missing), one
    phrase per file: ``data/raw.csv changed``, ``... is missing``, ``... is new``."""
    out = []
    for path in sorted(set(then) | set(now)):
        before, after = then.get(path), now.get(path)
        if before == after:
            continue
        if after is None and path in now:
            out.append(f"{path} is missing")
        elif after is None:
            if before is not None:  # a glob that no longer matches it
                out.append(f"{path} is missing")
        elif before is None and path in then:
            out.append(f"{path} appeared")
        elif before is None:
            out.append(f"{path} is new")
        else:
            out.append(f"{path} changed")
    return out
