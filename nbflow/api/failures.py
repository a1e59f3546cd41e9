"""A failed run as the user meets it: :class:`~nbflow.errors.StepFailed` with the Run.

``run = flow.run()`` never assigns ``run`` when it raises, so the error carries the Run
(``err.run``) and its message says code that resumes it and works when pasted. In IPython
the error renders without nbflow's frames: the step's traceback (the user's code, cells
named ``Cell In[n]``), then the line of the cell that ran the flow, then the message.
"""

from __future__ import annotations

import functools
import types
from typing import Any
from urllib.parse import urlsplit

from nbflow.engine.tracebacks import is_own_file
from nbflow.errors import StepFailed
from nbflow.store.open import default_location

# (Runs are typed ``Any`` here: nbflow.api.run imports this module.)
Run = Any


def attach_run(exc: StepFailed, run: Run) -> StepFailed:
    """Give ``exc`` the failed ``run``, a pasteable resume hint and IPython's rendering."""
    exc.attach_run(run, resume_code(run))
    exc._render_traceback_ = functools.partial(render_traceback, exc)  # type: ignore[attr-defined]
    return exc


def resume_code(run: Run) -> str:
    """Python that resumes ``run`` when pasted into the notebook that ran it."""
    uri = run.store.uri
    if uri in ("", ":memory:", "memory://") or _has_password(uri):
        # An in-memory store cannot be opened again by name (nor should a password be
        # printed): the flow finds it.
        return "flow.latest_run().resume()"
    if uri == _default_uri():
        return f"nf.get_run({run.id!r}).resume()"
    return f"nf.get_run({run.id!r}, store={uri!r}).resume()"


def _default_uri() -> str:
    from pathlib import Path

    location = default_location()
    if location.startswith("duckdb://"):
        location = location[len("duckdb://") :]
    if "://" in location or location == ":memory:":
        return location
    return str(Path(location).resolve())


def _has_password(uri: str) -> bool:
    if "://" not in uri:
        return False
    try:
        return urlsplit(uri).password is not None
    except ValueError:
        return True


def render_traceback(exc: StepFailed) -> list[str]:
    """How IPython shows ``exc``: the user's frames only, in IPython's own format."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:  # (IPython asks only when it runs, but be safe)
        import traceback

        return traceback.format_exception(exc)
    cause = exc.__cause__
    saved = (exc.__traceback__, exc.__cause__, exc.__suppress_context__)
    saved_cause = cause.__traceback__ if cause is not None else None
    lead: list[str] = []
    try:
        exc.__traceback__ = user_frames(exc.__traceback__)
        if cause is not None and user_frames(cause.__traceback__) is not None:
            cause.__traceback__ = user_frames(cause.__traceback__)
        else:
            # The step ran elsewhere (another process, a Dask worker): its traceback came
            # back as text, already cleaned.
            exc.__cause__ = None
            if exc.traceback:
                lead = [
                    exc.traceback.rstrip("\n"),
                    "\nThe above exception was the direct cause of the following exception:\n",
                ]
        stb = shell.InteractiveTB.structured_traceback(
            type(exc), exc, exc.__traceback__, tb_offset=0
        )
    finally:
        exc.__traceback__, exc.__cause__, exc.__suppress_context__ = saved
        if cause is not None:
            cause.__traceback__ = saved_cause
    return [*lead, *stb]


def user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The frames of ``tb`` that are the user's: not nbflow's own modules, and not the
    ones that ask to be hidden (IPython's own, with ``__tracebackhide__``)."""
    kept: list[types.TracebackType] = []
    while tb is not None:
        frame = tb.tb_frame
        hidden = frame.f_locals.get("__tracebackhide__", False)
        if not hidden and not is_own_file(frame.f_code.co_filename):
            kept.append(tb)
        tb = tb.tb_next
    rebuilt: types.TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt
