"""Small timing helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def timed(func: Callable[[], T]) -> tuple[float, T]:
    """Call ``func`` once (after a garbage collection) and return (seconds, its result)."""
    gc.collect()
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def median(samples: Sequence[float]) -> float:
    """The median of ``samples`` (which must not be empty)."""
    return float(statistics.median(samples))


def format_seconds(seconds: float) -> str:
    """A duration with a unit that keeps three significant figures readable."""
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-4:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.2f} us"
