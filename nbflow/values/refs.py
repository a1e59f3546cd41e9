"""Value references: how a stored value is named (codec, content hash, size, type).

These records belong to the values layer, since its codecs produce and read them; the
store layer re-exports them from :mod:`nbflow.store.records`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

__all__ = ["Codec", "ValueRef", "type_name", "value_ref_argument"]


class Codec(StrEnum):
    """How a value is stored."""

    JSON = "json"  # small JSON-exact values, inline in the event payload and the execution row
    JSON_BLOB = "json_blob"  # larger JSON-exact values, as UTF-8 JSON bytes in a blob
    ARROW = "arrow"  # a pandas DataFrame kept as a DuckDB table (memory store: an Arrow table)
    ARROW_IPC = "arrow_ipc"  # a DataFrame DuckDB cannot hold natively, as Arrow IPC bytes
    NUMPY = "npy"  # a numpy array, as .npy bytes
    PICKLE = "pickle"  # anything else, with cloudpickle


_CODECS = {codec.value: codec for codec in Codec}  # a dict lookup: Codec(x) costs ~5x


@dataclass(frozen=True)
class ValueRef:
    """Where and how a step's output is stored.

    ``hash`` is the content hash of the value (xxh3-128, hex); identical values share it,
    whichever step, run or fork produced them. ``inline`` holds a small JSON value itself;
    every other codec points at a blob row with this hash.
    """

    codec: Codec
    hash: str
    size: int
    type_name: str
    inline: Any = None

    @property
    def is_inline(self) -> bool:
        """True when the value lives in the ref itself, with no blob."""
        return self.codec is Codec.JSON

    def to_json(self) -> dict[str, Any]:
        """The ref as a JSON-able dict (how events and rows carry it)."""
        out: dict[str, Any] = {
            "codec": self.codec._value_,
            "hash": self.hash,
            "size": self.size,
            "type": self.type_name,
        }
        if self.is_inline:
            out["inline"] = self.inline
        return out

    def with_size(self, size: int) -> ValueRef:
        """This ref with ``size`` (the one its stored blob records)."""
        return self if size == self.size else replace(self, size=size)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ValueRef:
        """Rebuild a ref from :meth:`to_json` output."""
        return cls(
            codec=_CODECS.get(data["codec"]) or Codec(data["codec"]),
            hash=data["hash"],
            size=int(data["size"]),
            type_name=data.get("type", ""),
            inline=data.get("inline"),
        )


def type_name(tp: type) -> str:
    """``module.qualname`` of a type, with pandas/numpy/pyarrow types under their public
    module (``pandas.DataFrame`` rather than ``pandas.core.frame.DataFrame``)."""
    module, qualname = tp.__module__, tp.__qualname__
    root = module.partition(".")[0]
    if root in ("pandas", "numpy", "pyarrow") and module != root:
        public = sys.modules.get(root)
        if public is not None and getattr(public, qualname, None) is tp:
            module = root
    return f"{module}.{qualname}"


def value_ref_argument(value: object) -> ValueRef:
    """A ValueRef, as ``run.ref(step)`` gives one; ParameterError otherwise."""
    from nbflow import arguments

    return arguments.instance(value, ValueRef, "a value's ref", hint="run.ref(step) gives one.")
