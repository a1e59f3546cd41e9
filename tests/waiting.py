"""Waiting for a state in tests: poll a condition, with a generous timeout.

A test never sleeps for something to happen (on a loaded machine any fixed sleep is too
short): it waits until the state it expects is there, and fails, saying what it waited
for, only after :data:`GENEROUS` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Seconds a test waits for a state before it fails: long enough for a busy machine.
GENEROUS = 60.0
_POLL_S = 0.01


def wait_for(condition: Callable[[], T], what: str, timeout: float = GENEROUS) -> T:
    """Call ``condition`` until it returns something truthy, and return that; fail with
    ``what`` (and the last value) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g} s (last: {value!r})")
        time.sleep(_POLL_S)
