"""Peak memory while a run checkpoints one big output: bytes, an array, a frame, a pickle.

Each measurement is a fresh process (``python -m benchmarks.memory KIND BYTES STORE``)
that builds the value, runs a one-step flow whose step returns a tiny value of the same
kind (so DuckDB, the store and the engine are warmed up), then resets the kernel's
peak-RSS mark (``/proc/self/clear_refs``), notes its resident memory and runs the step
again with the big value. The *extra* memory is the peak resident memory during that run
(``VmHWM``) minus the resident memory just before it: what checkpointing the value cost
on top of the value itself. The target (DESIGN): at most 1x the value's size, 2x for
pickled objects.

The values, each ``BYTES`` long (1 GB for ``make bench``):

* ``bytes``: random bytes (stored by pickle, as every ``bytes`` output);
* ``array``: a float64 numpy array;
* ``frame``: the DataFrame of :mod:`benchmarks.dataframes` (int64, two float64 and a
  ``str`` column), sized by ``memory_usage(deep=True)``;
* ``pickle``: a dict of four float64 arrays and a list of 1,000 labels (pickled).

Without ``/proc`` (not Linux) the peak is ``ru_maxrss`` over the whole process, building
the value included, so the figure is then an upper bound.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import Quantity, Row

KINDS = ("bytes", "array", "frame", "pickle")
MAX_RATIO = {"bytes": 1.0, "array": 1.0, "frame": 1.0, "pickle": 2.0}  # extra / size


@dataclass
class MemoryCase:
    """One kind of value: its size and what checkpointing it cost."""

    kind: str
    nbytes: int = 0
    extra_bytes: int = 0
    seconds: float = 0.0
    codec: str = ""
    exact: bool = True  # False when the peak could not be reset (no /proc)


@dataclass
class MemoryResult:
    """Every kind, measured the same way."""

    target_bytes: int
    cases: list[MemoryCase] = field(default_factory=list)

    @property
    def description(self) -> str:
        """One line for the report's header."""
        return (
            f"memory: one run checkpointing a {self.target_bytes / 1e9:g} GB output "
            "(bytes, float64 array, DataFrame, pickled dict), each in a fresh process; extra = "
            "peak RSS during the run - RSS before it, the value already built"
        )


# -- in the child process -----------------------------------------------------------------


def build(kind: str, nbytes: int) -> Any:
    """A value of ``kind`` about ``nbytes`` bytes big."""
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "bytes":
        return rng.bytes(nbytes)
    if kind == "array":
        return rng.random(max(nbytes // 8, 1))
    if kind == "frame":
        from benchmarks.dataframes import make_frame

        sample = make_frame(10_000)
        per_row = sample.memory_usage(deep=True).sum() / len(sample)
        return make_frame(max(int(nbytes / per_row), 1))
    if kind == "pickle":
        quarter = max(nbytes // 32, 1)
        return {
            "weights": [rng.random(quarter) for _ in range(4)],
            "labels": [f"label {i}" for i in range(1_000)],
        }
    raise ValueError(f"unknown kind {kind!r}")


def size_of(value: Any) -> int:
    """The value's size in memory (a frame's ``memory_usage(deep=True)``)."""
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return int(value.memory_usage(deep=True).sum())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(a.nbytes for a in value["weights"]) + sum(len(s) for s in value["labels"])
    return len(value)


def _status(key: str) -> int | None:
    """A ``/proc/self/status`` figure in bytes (VmRSS, VmHWM), or None without /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def measure_child(kind: str, nbytes: int, store_path: str) -> dict[str, Any]:
    """Run the one-step flow with a tiny value, then the big one; what it cost."""
    import nbflow as nf

    values = {"tiny": build(kind, 1024), "big": build(kind, nbytes)}
    flow = nf.Flow(f"memory-{kind}", store=store_path)

    @flow.step
    def output(which: str = "tiny") -> Any:
        return values[which]

    flow.run(which="tiny", progress=False)
    gc.collect()
    exact = _reset_peak()
    before = _status("VmRSS")
    started = time.perf_counter()
    run = flow.run(which="big", progress=False)
    seconds = time.perf_counter() - started
    peak = _status("VmHWM")
    if before is None or peak is None:  # no /proc: the process's peak, in KiB on Linux
        exact, before = False, 0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    codec = run.ref("output").codec.value
    flow.store.close()
    return {
        "nbytes": size_of(values["big"]),
        "extra_bytes": max(peak - before, 0),
        "seconds": seconds,
        "codec": codec,
        "exact": exact,
    }


# -- in the benchmark process --------------------------------------------------------------


def run_memory(
    workdir: Path, nbytes: int, log: Callable[[str], None] = print, kinds: tuple[str, ...] = KINDS
) -> MemoryResult:
    """Measure every kind in its own process, one after the other."""
    result = MemoryResult(nbytes)
    root = Path(__file__).resolve().parent.parent
    for kind in kinds:
        log(f"  {kind}: {nbytes / 1e9:g} GB")
        store = workdir / f"memory-{kind}.duckdb"
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", kind, str(nbytes), str(store)],
            capture_output=True,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            check=False,
        )
        for leftover in (store, store.with_name(store.name + ".wal")):
            leftover.unlink(missing_ok=True)
        if done.returncode != 0:
            raise RuntimeError(f"the {kind} measurement failed:\n{done.stderr[-2000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        result.cases.append(MemoryCase(kind, **figures))
    return result


def memory_rows(result: MemoryResult) -> list[Row]:
    """Extra peak memory of each kind against its size, with the target."""
    rows = []
    for case in result.cases:
        limit = MAX_RATIO[case.kind]
        ratio = case.extra_bytes / case.nbytes if case.nbytes else 0.0
        note = "" if case.exact else " (peak not reset: upper bound)"
        rows.append(
            Row(
                f"memory, checkpointing {case.nbytes / 1e9:.2f} GB {case.kind} "
                f"({case.codec}, {case.seconds:.1f} s): extra peak RSS{note}",
                Quantity(case.extra_bytes / 1e6, "MB"),
                "the value's size",
                Quantity(case.nbytes / 1e6, "MB"),
                target=f"<= {limit:g}x",
                met=ratio <= limit,
            )
        )
    return rows


def main(argv: list[str]) -> int:
    """``python -m benchmarks.memory KIND BYTES STORE``: one measurement, as JSON."""
    kind, nbytes, store = argv
    print(json.dumps(measure_child(kind, int(nbytes), store)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
