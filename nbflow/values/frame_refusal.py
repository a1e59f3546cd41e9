"""Why a pandas frame cannot be stored as a table, said so a user can fix it.

:func:`~nbflow.values.pandas_codec.encode_pandas` stores a DataFrame or Series as a table
only when it comes back identical; otherwise the frame is pickled. A pickled frame loads
back exactly, but cannot be queried with SQL and needs a trusted store to load, so the
fallback is never silent: a :class:`TableRefusal` names the column (or the index, or the
column labels) that forced it, why, and the cheapest fix, and travels in the pickled
value's meta (``pickled_because``) to the step's ``step_output_recorded`` event and a
:class:`~nbflow.errors.PickledOutputWarning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["TableRefusal", "label_text", "object_refusal"]

#: The key of a pickled frame's meta that holds its :meth:`TableRefusal.to_json`.
PICKLED_BECAUSE = "pickled_because"


@dataclass(frozen=True)
class TableRefusal:
    """What kept a frame from being stored as a table.

    ``column`` is the column's label (as JSON: a str or int label as it is, others as
    their repr), None when the cause is not one column; ``where`` says where the cause is
    in words ("column 'c'", "the index", "the column labels", "the frame"); ``reason`` why;
    ``fix`` the cheapest change, as code to run on the frame before returning it.
    """

    where: str
    reason: str
    fix: str
    column: Any = None

    def to_json(self) -> dict[str, Any]:
        """The refusal as a JSON-able dict (how events and the value's meta carry it)."""
        return {"column": self.column, "where": self.where, "reason": self.reason, "fix": self.fix}

    def sentence(self) -> str:
        """``where`` and ``reason`` as one phrase, e.g. "column 'c': values of several
        types (int, str)"."""
        return f"{self.where}: {self.reason}"


def label_text(label: Any) -> Any:
    """A column label as JSON: str and int labels as they are, others as their repr."""
    if type(label) is str or (type(label) is int and abs(label) < 2**53):
        return label
    return repr(label)


def object_refusal(values: np.ndarray, where: str, target: str, column: Any) -> TableRefusal:
    """Why the object values of ``where`` (``target`` in code, e.g. ``df['c']``) do not
    come back from a table as they are, and the cheapest fix."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    present = values[~pd.isna(values)] if len(values) else values
    types = _type_names(present)
    assign = _assignment(target)
    if kind in ("string", "bytes", "empty"):
        marks = sorted({_missing_name(v) for v in values[pd.isna(values)]})
        reason = (
            f"missing values marked in more than one way ({', '.join(marks)}); a table "
            "keeps only one"
            if len(marks) > 1
            else f"missing values marked as {marks[0] if marks else 'an unusual value'}, "
            "which a table does not keep"
        )
        return TableRefusal(
            where, reason, assign(f"{target}.where({target}.notna(), None)"), column
        )
    if any(isinstance(v, list | dict | tuple | set | np.ndarray) for v in present):
        reason = f"containers ({', '.join(types)}), kept only as a pickle"
        return TableRefusal(where, reason, assign(f"{target}.map(json.dumps)"), column)
    if kind == "decimal":
        reason = "decimal.Decimal values, kept exactly only as a pickle"
        return TableRefusal(where, reason, assign(f"{target}.astype(float)"), column)
    if kind in ("integer", "floating", "mixed-integer-float", "boolean"):
        reason = f"numbers ({', '.join(types)}) in an object column"
        return TableRefusal(where, reason, assign(f"pd.to_numeric({target})"), column)
    if len(types) > 1:
        reason = f"values of several types ({', '.join(types)})"
    else:
        reason = f"{', '.join(types) or 'object'} values, which a table cannot hold"
    return TableRefusal(where, reason, assign(f"{target}.astype(str)"), column)


def _assignment(target: str) -> Any:
    """``target = <expression>``, with the index and labels assigned as pandas wants."""
    if target == "df.columns":
        return lambda _expression: "df.columns = [str(c) for c in df.columns]"
    return lambda expression: f"{target} = {expression}"


def _type_names(values: np.ndarray, limit: int = 4) -> list[str]:
    """The names of the first ``limit`` distinct types among ``values``, in order met."""
    names: list[str] = []
    for value in values:
        tp = type(value)
        name = tp.__name__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__name__}"
        if name not in names:
            names.append(name)
            if len(names) == limit:
                break
    return names


def _missing_name(value: Any) -> str:
    if value is None:
        return "None"
    if value is pd.NA:
        return "pd.NA"
    if isinstance(value, float):
        return "NaN"
    return repr(value)
