"""Data globals: values a step reads that are neither code nor constants, by content.

A ``LOOKUP`` frame, an array, a list of ids: their content is part of the cache key of
every step that reads them, so rebinding or changing one makes the step stale. They are
hashed with xxh3-128 the way stored values are: an array over its dtype, shape and raw
bytes (:func:`~nbflow.values.hashing.hash_numpy`, as outputs), anything else over its
canonical pickle (:func:`~nbflow.values.pickling.canonical_dump`, as pickled outputs,
sets in a canonical order), streamed into the hasher without copying its buffers. A
DataFrame goes the pickle way too: it hashes at memory speed, where building the Arrow
table that stored frames are hashed over costs ten times more.

In that pickle, a class or function of the user's own code (or one cloudpickle would
pickle by value) stands for a text of its code instead: the class-tracker ids cloudpickle
gives classes defined in ``__main__`` differ in every process, and would make the same
object hash differently in every kernel.

A value that cannot be pickled (an open connection, a lock, a file) has no content nbflow
can see: the step that reads it is *untracked*. :func:`untracked` marks such a value as
not part of any key, on the user's word.
"""

from __future__ import annotations

import threading
import types
import weakref
from typing import Any, NamedTuple, TypeVar

import numpy as np
import xxhash
from cloudpickle import cloudpickle as _cloudpickle

from nbflow.errors import DefinitionError
from nbflow.graph.code_text import class_text, constant_hash, function_text
from nbflow.graph.modules import ModuleKind, module_kind, package_of
from nbflow.values.hashing import hash_numpy
from nbflow.values.pickling import canonical_dump

__all__ = ["DATA", "IGNORED", "UNTRACKED", "DataHashes", "DataPart", "is_untracked", "untracked"]

# Part values that are not code: how a part says what it stands for.
DATA = "data:"  # a data global's content hash
UNTRACKED = "untracked:"  # a global nbflow cannot hash (the step is untracked)
IGNORED = "ignored:"  # a global marked with nf.untracked(): not part of the key

T = TypeVar("T")

_MAX_REASON = 200


# -- nf.untracked ----------------------------------------------------------------------

_marked_lock = threading.Lock()
# id -> the object itself when it cannot be weakly referenced (so that its id is never
# reused while the mark lasts), else None (the mark goes with the object).
_marked: dict[int, Any] = {}


def untracked(value: T) -> T:
    """Mark ``value`` as not part of the cache key of the steps that read it; return it.

    For a global nbflow cannot hash (a database connection, a client, a model object
    without a stable byte form), when the results of the steps that read it do not
    depend on which one it is: ``con = nf.untracked(duckdb.connect("warehouse.duckdb"))``.
    Steps reading it are then cached as usual; what the value holds is on you. Code and
    plain constants cannot be marked (they are always part of the key).
    """
    if isinstance(value, type | types.FunctionType | types.ModuleType | types.MethodType):
        raise DefinitionError(
            f"nf.untracked() marks data, not code ({value!r}): code is always part of the "
            "cache key. To stop code edits from invalidating a step, pin it with "
            "@flow.step(version=...)."
        )
    if value is None or constant_hash(value) is not None:
        raise DefinitionError(
            f"nf.untracked() cannot mark {type(value).__name__} value {_short(value)}: plain "
            "constants (numbers, strings, small lists and dicts of them) are part of the "
            "cache key of every step that reads them, and are cheap to hash."
        )
    key = id(value)
    try:
        weakref.finalize(value, _unmark, key)
        kept = None
    except TypeError:  # not weakly referenceable: keep it, so its id stays its own
        kept = value
    with _marked_lock:
        _marked[key] = kept
    return value


def _unmark(key: int) -> None:
    with _marked_lock:
        _marked.pop(key, None)


def is_untracked(value: Any) -> bool:
    """Whether ``value`` was marked with :func:`untracked`."""
    key = id(value)
    if key not in _marked:
        return False
    kept = _marked.get(key)
    return kept is None or kept is value


# -- hashing -----------------------------------------------------------------------------


class _HashSink:
    """A file for the pickler that feeds what it is given to xxh3, copying nothing."""

    __slots__ = ("hasher",)

    def __init__(self) -> None:
        self.hasher = xxhash.xxh3_128(b"nbflow-data")

    def write(self, data: Any) -> int:
        view = data.raw() if hasattr(data, "raw") else memoryview(data)
        self.hasher.update(view)
        return view.nbytes


def _code_token(obj: Any) -> tuple[Any, ...] | None:
    """A reduce that stands a class or function of the user's code for its code's text."""
    if isinstance(obj, type):
        text = _user_code(obj, lambda: class_text(obj)[0])
    elif isinstance(obj, types.FunctionType):
        text = _user_code(obj, lambda: function_text(obj))
    else:
        return None
    if text is None:
        return None
    digest = xxhash.xxh3_64_hexdigest(text.encode("utf-8", "surrogatepass"))
    return (str, (f"<code {obj.__module__}.{obj.__qualname__} {digest}>",))


def _user_code(obj: type | types.FunctionType, text: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        return None
    by_value = module_kind(module) is ModuleKind.USER
    if not by_value:
        try:
            by_value = not _cloudpickle._should_pickle_by_reference(obj)
        except Exception:  # a private helper of cloudpickle's: if it moved, by name it is
            by_value = False
    if not by_value:
        return None  # pickled by name (pandas.DataFrame): the same in every process
    try:
        result = text()
    except Exception:  # a class whose attributes cannot be read: its name, then
        return f"{module}.{obj.__qualname__}"
    return str(result)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _data_hash(value: Any) -> tuple[str | None, str]:
    """(content hash, "") for a value nbflow can hash, else (None, why not)."""
    if type(value) is np.ndarray and not value.dtype.hasobject:
        return "npy:" + hash_numpy("data", value), ""
    if isinstance(value, np.generic) and not value.dtype.hasobject:
        return "npy:" + hash_numpy("data:scalar", np.asarray(value)), ""
    try:
        sink = canonical_dump(value, _HashSink, protocol=5, replace=_code_token)
    except RecursionError:
        return None, "it is nested too deeply to be pickled"
    except Exception as exc:  # pickling runs arbitrary __reduce__ code: anything can fail
        text = f"{type(exc).__name__}: {exc}"
        if len(text) > _MAX_REASON:
            text = text[: _MAX_REASON - 3] + "..."
        return None, f"it cannot be pickled ({text})"
    return "pickle:" + sink.hasher.hexdigest(), ""


class DataPart(NamedTuple):
    """What a data value stands for in a fingerprint."""

    text: str  # the part: "data:<hash>", "untracked:<type>" or "ignored:<type>"
    untracked: str | None  # why it cannot be hashed (None: it can, or it is ignored)
    user_type: type | None  # its class, when that is the user's code (to be followed)
    package: tuple[str, str] | None  # the distribution its class comes from, if any


class DataHashes:
    """Content hashes of data values, each value hashed once (by identity).

    Make one per planning of a run (or per ``flow.status()``): a value is taken as it is
    then, however many steps read it. It holds the values it hashed, so an id is never
    reused for another value while it lives.
    """

    def __init__(self) -> None:
        self._memo: dict[int, tuple[Any, str | None, str]] = {}
        self._parts: dict[int, tuple[Any, DataPart]] = {}

    def digest(self, value: Any) -> tuple[str | None, str]:
        """(hash, "") for ``value``, or (None, why it cannot be hashed)."""
        known = self._memo.get(id(value))
        if known is not None and known[0] is value:
            return known[1], known[2]
        digest, reason = _data_hash(value)
        self._memo[id(value)] = (value, digest, reason)
        return digest, reason

    def part(self, value: Any) -> DataPart:
        """The fingerprint part of ``value`` and what comes with it (memoized)."""
        known = self._parts.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        kind = type(value)
        name = f"{kind.__module__}.{kind.__qualname__}"
        user = module_kind(kind.__module__) is ModuleKind.USER
        package = None if user else package_of(kind.__module__)
        untracked: str | None = None
        if is_untracked(value):
            text = IGNORED + name
        else:
            digest, reason = self.digest(value)
            if digest is None:
                text, untracked = UNTRACKED + name, f"a {name}: {reason}"
            else:
                text = DATA + digest
        part = DataPart(text, untracked, kind if user else None, package)
        self._parts[id(value)] = (value, part)
        return part
