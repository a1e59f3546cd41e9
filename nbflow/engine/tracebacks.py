"""A failed step's traceback as the user should read it: their frames, their cells.

A step's traceback is captured as text where it ran (maybe in another process), so it is
cleaned as text: the frames of nbflow's own modules (the executor that called the step)
are left out, and a notebook cell's file (``/tmp/ipykernel_…/….py``) is named the way
IPython names it, ``Cell In[3]``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

_PACKAGE = str(Path(__file__).resolve().parent.parent)
# Steps written in these modules are the user's code, even though they ship with nbflow.
_USER_MODULES = (str(Path(_PACKAGE) / "demo.py"),)
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+)(?P<rest>.*)$')


def is_own_file(filename: str) -> bool:
    """Whether ``filename`` is one of nbflow's own modules (not a step the user wrote)."""
    if filename.startswith("<"):
        return False
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return resolved.startswith(_PACKAGE + "/") and resolved not in _USER_MODULES


def clean_trace(trace: str) -> str:
    """``trace`` (a formatted traceback) without nbflow's frames, cells named as cells."""
    if not trace:
        return trace
    namer = _cell_namer()
    out: list[str] = []
    skipping = False
    for line in trace.splitlines(keepends=True):
        frame = _FRAME.match(line.rstrip("\n"))
        if frame is not None:
            skipping = is_own_file(frame["file"])
            if not skipping:
                label = namer(frame["file"])
                if label is not None:
                    line = f"  {label}, line {frame['line']}{frame['rest']}\n"
            if skipping:
                continue
        elif skipping and line.startswith("    "):
            continue  # the source line (and carets) of a skipped frame
        else:
            skipping = False
        out.append(line)
    return "".join(out)


def _cell_namer() -> Any:
    """A function naming a notebook cell's file as IPython does (``Cell In[3]``), or
    returning None for any other file."""
    shell = None
    if "IPython" in sys.modules:
        from IPython import get_ipython

        shell = get_ipython()
    compiler = getattr(shell, "compile", None)
    format_name = getattr(compiler, "format_code_name", None)

    def name(filename: str) -> str | None:
        if format_name is None:
            return None
        try:
            label = format_name(filename)
        except Exception:  # an IPython without the mapping: keep the file name
            return None
        return None if label is None else f"{label[0]} {label[1]}"

    return name
