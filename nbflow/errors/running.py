"""Errors of running, reading and moving runs: notebooks, failed steps, waits, transfers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nbflow.errors.base import NbflowError


class NotebookError(NbflowError):
    """A notebook cannot be loaded as a flow (missing, not a notebook, or a bad cell)."""


class RunError(NbflowError):
    """A run cannot be started, resumed or read as asked."""


class ReproductionError(RunError):
    """A run cannot be reproduced as asked (see docs/reproduce.md), or a step of a
    reproduction cannot be defined again from its record."""


class DuplicateRunError(RunError, ValueError):
    """A run with this id already exists in the store."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        super().__init__(f"a run with id {run_id!r} already exists in the store")


class StepFailed(RunError):
    """A step raised; the run is failed. ``.step``, ``.run_id`` and ``.__cause__`` say more.

    ``.run`` is the failed :class:`~nbflow.Run` (set when ``flow.run()``, ``run.resume()``
    or ``run.wait()`` raise it), so ``err.run.resume()`` continues it even though
    ``run = flow.run()`` never assigned ``run``. ``.traceback`` is the step's own traceback
    as recorded (cells named ``Cell In[n]``, nbflow's frames left out).
    """

    def __init__(
        self, step: str, run_id: str, error: str, traceback: str = "", *, resume: str = ""
    ):
        self.step = step
        self.run_id = run_id
        self.error = error
        self.traceback = traceback
        self.run: Any = None
        super().__init__(_step_failed_message(step, run_id, error, resume))

    def attach_run(self, run: Any, resume: str) -> None:
        """Attach the failed Run and say ``resume`` (code that resumes it) in the message."""
        self.run = run
        self.args = (_step_failed_message(self.step, self.run_id, self.error, resume),)


def _step_failed_message(step: str, run_id: str, error: str, resume: str) -> str:
    resume = resume or f"nf.get_run({run_id!r}).resume()"
    return (
        f"step {step!r} failed in run {run_id}: {error.rstrip('.')}. Fix it, then continue "
        f"from the checkpoints with `{resume}` (this error's `.run` is the failed run)."
    )


class StepTimeout(RunError, TimeoutError):
    """A step ran longer than its ``timeout``."""


class InputMutatedError(RunError):
    """A step changed one of its inputs in place (``.step`` and ``.input`` name them).

    The input is another step's output, shared with every step that reads it: changing it
    would make their results depend on the order steps happen to run in.
    """

    def __init__(self, step: str, input: str, alongside: Sequence[str] = ()):
        self.step = step
        self.input = input
        self.alongside = tuple(alongside)
        if self.alongside:
            others = " or ".join(repr(s) for s in self.alongside)
            what = (
                f"step {step!r} found its input {input!r} changed in place after it ran: "
                f"it, or step {others} reading the same object at the same time (on the "
                "thread executor), changed it"
            )
        else:
            what = (
                f"step {step!r} changed its input {input!r} in place (its content differs "
                "after the step ran)"
            )
        super().__init__(
            f"{what}: {input!r} is the output of step {input!r}, shared with every step "
            f"that reads it. Work on a copy ({input} = {input}.copy(), or "
            f"copy.deepcopy({input})), or declare @flow.step(copy_inputs=True) to be given "
            "copies."
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, tuple[str, ...]]]:
        # (Raised in worker processes: it must unpickle with its arguments.)
        return type(self), (self.step, self.input, self.alongside)


class WaitTimeout(RunError, TimeoutError):
    """``run.wait(timeout)`` returned before the run finished; the run goes on."""

    def __init__(self, run_id: str, status: str, timeout: float):
        self.run_id = run_id
        super().__init__(
            f"run {run_id} is still {status} after the {timeout:g} s waited for it; it goes "
            "on in the background. Call `run.wait()` again (without a timeout to wait until "
            "it ends), or `run.cancel()` to stop it."
        )


class OutputNotAvailableError(RunError, KeyError):
    """The run has no stored output for this step (it failed, was skipped or has not run)."""

    def __str__(self) -> str:
        return str(self.args[0])


class TransferError(NbflowError):
    """A run cannot be exported, imported or copied (not an export, a run that exists with
    other content, a run still running, a bad value)."""
