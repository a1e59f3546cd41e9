"""Whose code a module holds: the user's own (followed like notebook code), an installed
package's (its name and version count instead), or the standard library's (neither).

A module is the user's own unless its file lies in the standard library or in an
installed-packages folder (``site-packages``, ``dist-packages``). So the notebook's
folder, the project's source tree and editable installs (whose files stay in the source
tree) are the user's; nbflow itself always counts as a package. What is learnt about a
module or a distribution is kept for the life of the process: the version recorded is
the one this process first saw, i.e. the one it imported (upgrading a package in a
running kernel changes nothing until the kernel restarts and imports the new one).
"""

from __future__ import annotations

import enum
import importlib.metadata
import os
import sys
import sysconfig
import threading
import types

__all__ = ["ModuleKind", "module_kind", "package_of"]


class ModuleKind(enum.Enum):
    """Where a module's code comes from."""

    USER = "user"
    PACKAGE = "package"
    STDLIB = "stdlib"


# Top-level names that are packages whatever their files' location (nbflow is often an
# editable install: its code is nbflow's, not the user's, however it was installed).
_ALWAYS_PACKAGES = frozenset({"nbflow"})
_INSTALL_FOLDERS = frozenset({"site-packages", "dist-packages"})
_STDLIB_NAMES = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)

_lock = threading.Lock()
_kinds: dict[str, tuple[int, ModuleKind]] = {}  # module name -> (id of the module, kind)
_versions: dict[str, tuple[str, str] | None] = {}  # top-level name -> (distribution, version)


def _stdlib_roots() -> tuple[str, ...]:
    roots = set()
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.normcase(os.path.realpath(path)))
    return tuple(sorted(roots))


_STDLIB_ROOTS = _stdlib_roots()


def _kind_of_file(path: str) -> ModuleKind:
    real = os.path.normcase(os.path.realpath(path))
    parts = set(real.split(os.sep))
    if parts & _INSTALL_FOLDERS:
        return ModuleKind.PACKAGE
    if any(real.startswith(root + os.sep) for root in _STDLIB_ROOTS):
        return ModuleKind.STDLIB
    return ModuleKind.USER


def _classify(module: types.ModuleType) -> ModuleKind:
    name = module.__name__
    top = name.partition(".")[0]
    if name == "__main__":
        return ModuleKind.USER
    if top in _ALWAYS_PACKAGES:
        return ModuleKind.PACKAGE
    if top in _STDLIB_NAMES:
        return ModuleKind.STDLIB
    file = getattr(module, "__file__", None)
    if isinstance(file, str) and file:
        return _kind_of_file(file)
    paths = [p for p in getattr(module, "__path__", None) or () if isinstance(p, str)]
    if paths:  # a namespace package: where its folders are
        kinds = {_kind_of_file(p) for p in paths}
        return ModuleKind.USER if ModuleKind.USER in kinds else kinds.pop()
    # No file at all (made in memory, e.g. types.ModuleType in a notebook): its code is
    # the user's, and following it costs only time.
    return ModuleKind.USER


def module_kind(name: str) -> ModuleKind:
    """The kind of the module called ``name`` (a function's or class's ``__module__``).

    A module that is not imported (a function made by ``exec`` under a made-up module
    name) is the user's.
    """
    module = sys.modules.get(name)
    if module is None:
        return ModuleKind.USER
    known = _kinds.get(name)
    if known is not None and known[0] == id(module):
        return known[1]
    kind = _classify(module)
    with _lock:
        _kinds[name] = (id(module), kind)
    return kind


def package_of(name: str) -> tuple[str, str] | None:
    """The installed distribution (name, version) that provides module ``name``, or None
    for the standard library and the user's own modules."""
    if module_kind(name) is not ModuleKind.PACKAGE:
        return None
    top = name.partition(".")[0]
    if top in _versions:
        return _versions[top]
    found = _lookup(top)
    with _lock:
        _versions[top] = found
    return found


def _lookup(top: str) -> tuple[str, str] | None:
    """Ask importlib.metadata which distribution provides ``top``, and its version."""
    dist: importlib.metadata.Distribution | None
    try:
        # The import name is the distribution's name for most packages (pandas, numpy).
        dist = importlib.metadata.distribution(top)
    except importlib.metadata.PackageNotFoundError:
        dist = _providing(top)
    if dist is not None:
        name = dist.metadata["Name"] or top
        return str(name), str(dist.version)
    module = sys.modules.get(top)
    version = getattr(module, "__version__", None)
    # A package without metadata (copied into site-packages by hand): its own word, if any.
    return top, version if isinstance(version, str) else "unknown"


def _providing(top: str) -> importlib.metadata.Distribution | None:
    """The distribution whose files hold package ``top`` (sklearn: scikit-learn).

    ``packages_distributions()`` reads every distribution's file list (seconds, with many
    installed): ``top_level.txt`` is read first, the file list only where it is missing.
    """
    unlisted = []
    for dist in importlib.metadata.distributions():
        listed = dist.read_text("top_level.txt")
        if listed is None:
            unlisted.append(dist)
        elif top in listed.split():
            return dist
    for dist in unlisted:
        for file in dist.files or ():
            first = file.parts[0] if file.parts else ""
            if first == top or first == f"{top}.py" or first.startswith(f"{top}."):
                return dist
    return None


def _clear() -> None:
    """Forget what is known of modules and distributions (for tests)."""
    with _lock:
        _kinds.clear()
        _versions.clear()
