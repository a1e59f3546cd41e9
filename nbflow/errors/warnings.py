"""The warnings nbflow issues: store upkeep, untracked steps, pickled tables."""

from __future__ import annotations

from collections.abc import Mapping


class NbflowWarning(UserWarning):
    """Base class of every warning nbflow issues."""


class StoreMaintenanceWarning(NbflowWarning):
    """nbflow tidied a store: it removed what an interrupted gc or export left behind."""


class UntrackedStepWarning(NbflowWarning):
    """A step reads a global nbflow cannot hash, so it runs on every run (never reused
    from the cache): the message names the global and the ways to pin it."""


def untracked_message(step: str, untracked: Mapping[str, str]) -> str:
    """Why ``step`` is untracked (``untracked``: global -> why it cannot be hashed), and
    what to do about it."""
    names = ", ".join(f"{name} ({why})" for name, why in untracked.items())
    first = next(iter(untracked), "value").rpartition(".")[2]
    return (
        f"step {step!r} is untracked: it reads {names}, which nbflow cannot hash, so it "
        "runs on every run instead of being reused from the cache. If its result does not "
        f"depend on that value, mark it where it is made: {first} = nf.untracked(...); or "
        'pin the step with @flow.step(version="1") and change the version when its '
        "result should change."
    )


class PickledOutputWarning(NbflowWarning):
    """A step's DataFrame or Series could not be stored as a table, so it was pickled.

    ``.step`` names the step; ``.because`` is the refusal as recorded in its
    ``step_output_recorded`` event (``column``, ``where``, ``reason``, ``fix``).
    """

    def __init__(self, step: str, type_name: str, because: dict[str, object]):
        self.step = step
        self.because = because
        super().__init__(
            f"the output of step {step!r} (a {type_name}) was pickled, not stored as a "
            f"table, because of {because.get('where')}: {because.get('reason')}. It loads "
            "back as it was, but cannot be queried with store.sql and needs a trusted store "
            f"to load. The cheapest fix, before the step returns it: `{because.get('fix')}`"
        )
