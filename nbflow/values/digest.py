"""Digests of a value's current state, to tell whether code changed it in place.

A step's inputs are digested before it runs and again after; a different digest means
the step mutated them. The digest uses the content hashing of stored values (xxh3-128 over
the raw bytes of numpy columns and arrays, in place; over Arrow buffers for other
columns; over canonical pickle bytes for the rest), and it is compared only with digests
of the same object made in the same process.
"""

from __future__ import annotations

import datetime as dt
import decimal
import fractions
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from nbflow.values.hashing import hash_arrow_table, hash_bytes, hash_numpy, new_hasher
from nbflow.values.pickling import canonical_dumps

__all__ = ["state_digest"]

# Values of these types cannot change in place: nothing to digest.
_IMMUTABLE: frozenset[type] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        range,
        decimal.Decimal,
        fractions.Fraction,
        dt.date,
        dt.datetime,
        dt.time,
        dt.timedelta,
    }
)


def state_digest(value: Any) -> str | None:
    """A digest of ``value``'s content as it is now; None for a value that cannot change
    in place (a number, a string) or that cannot be digested (it does not pickle)."""
    tp = type(value)
    if tp in _IMMUTABLE:
        return None
    if tp is pd.DataFrame or tp is pd.Series:
        digest = _pandas_digest(value)
        if digest is not None:
            return digest
    elif tp is np.ndarray and not value.dtype.hasobject:
        return hash_numpy("state:ndarray", value)
    try:
        return hash_bytes("state:pickle", canonical_dumps(value))
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
        return None


def _pandas_digest(value: pd.DataFrame | pd.Series) -> str | None:
    """Over each column's own memory: numpy columns hashed in place (no copy), others
    through Arrow; the labels, dtypes and index too. None where a column holds what
    neither can (the pickle digest is used then)."""
    frame = value.to_frame() if isinstance(value, pd.Series) else value
    h = new_hasher("state:pandas")
    labels = (list(frame.columns), frame.columns.names, frame.index.names, list(frame.dtypes))
    h.update(repr(labels).encode())
    index = frame.index
    if isinstance(index, pd.RangeIndex):
        h.update(repr((index.start, index.stop, index.step)).encode())
    else:
        found = _column_digest(pd.Series(index, copy=False))
        if found is None:
            return None
        h.update(found.encode())
    for position in range(frame.shape[1]):
        found = _column_digest(frame.iloc[:, position])
        if found is None:
            return None
        h.update(found.encode())
    return h.hexdigest()


def _column_digest(column: pd.Series) -> str | None:
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and not dtype.hasobject:
        return hash_numpy("state:column", column.to_numpy(copy=False))
    try:
        array = pa.array(column, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, NotImplementedError):
        return None
    return hash_arrow_table("state:column", pa.table({"c": array}))
