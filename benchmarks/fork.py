"""Forking a run whose upstream outputs total ~1 MB vs ~1 GB: time and value bytes written.

The flow: four upstream steps ``part0..part3``, each a float64 DataFrame of a quarter of
the total (different random data, so four distinct values), a ``summary`` step reading
all four and returning a small dict, and a tiny ``report`` step reading only the summary.
One run goes into a fresh DuckDB file (the setup, not timed into the result); then
``run.fork(from_step="report")`` is timed ``repeats`` times, each a new fork of that run.

A fork records the reused outputs as references and re-executes only ``report``, whose
only input is the small summary; so neither the fork nor the step it runs should touch the
frames, and the fork should cost the same whatever they weigh (the target: milliseconds,
the big case within 1.5x of the small one) and write no value bytes (the target: 0). A
step that *reads* a big output must load it; that is the step's cost, not the fork's, and
is not what this measures.

Value bytes written: the sum of ``size`` over ``store.list_blobs()`` after the forks minus
before (and the number of new blobs). The store file growth (file + WAL) is shown beside
it: it is the forks' events and rows, not values.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import nbflow as nf
from benchmarks.report import Quantity, Row
from benchmarks.timing import median
from nbflow.store.duckdb.store import DuckDBStore

PARTS = 4
COLUMNS = 4  # float64 columns per frame: 32 bytes a row
MAX_RATIO = 1.5  # big fork time / small fork time
MAX_FORK_S = 0.1  # "milliseconds": each fork well under a tenth of a second


@dataclass
class ForkCase:
    """One size: the setup run and the forks' samples."""

    label: str
    target_bytes: int
    upstream_bytes: int = 0  # the stored size of the four frames
    setup_s: float = 0.0
    fork_s: list[float] = field(default_factory=list)
    blob_bytes_written: int = 0  # over all the forks
    blobs_written: int = 0
    file_bytes_growth: int = 0  # store file + WAL, over all the forks
    forks: int = 0


@dataclass
class ForkResult:
    """The small and the big case, measured the same way."""

    small: ForkCase
    big: ForkCase
    repeats: int

    @property
    def description(self) -> str:
        """One line for the report's header."""
        return (
            f"fork: {PARTS} upstream DataFrames ({self.small.label} vs {self.big.label} in "
            f"total) -> summary -> report; run.fork(from_step='report'), median of "
            f"{self.repeats}, each a new fork of the same run in its DuckDB file"
        )


def fork_flow(store: DuckDBStore, rows: int) -> nf.Flow:
    """The benchmark flow with ``rows`` rows in each upstream frame."""
    flow = nf.Flow("fork-bench", store=store)

    def frame(seed: int, n: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return pd.DataFrame(rng.random((n, COLUMNS)), columns=[f"c{i}" for i in range(COLUMNS)])

    @flow.step
    def part0(rows: int = rows):
        return frame(0, rows)

    @flow.step
    def part1(rows: int = rows):
        return frame(1, rows)

    @flow.step
    def part2(rows: int = rows):
        return frame(2, rows)

    @flow.step
    def part3(rows: int = rows):
        return frame(3, rows)

    @flow.step
    def summary(part0, part1, part2, part3):
        parts = (part0, part1, part2, part3)
        means = [float(p.to_numpy().mean()) for p in parts]
        return {"rows": sum(len(p) for p in parts), "mean": float(np.mean(means))}

    @flow.step
    def report(summary, threshold: float = 0.5):
        return {"above": summary["mean"] > threshold, "rows": summary["rows"]}

    return flow


def _blob_totals(store: DuckDBStore) -> tuple[int, int]:
    blobs = store.list_blobs()
    return sum(b.size for b in blobs), len(blobs)


def measure_case(
    workdir: Path, label: str, total_bytes: int, repeats: int, log: Callable[[str], None]
) -> ForkCase:
    """Set up one run of ``total_bytes`` of upstream frames, then time its forks."""
    case = ForkCase(label, total_bytes)
    rows = max(1, total_bytes // (PARTS * COLUMNS * 8))
    path = workdir / f"fork-{label.replace(' ', '')}.duckdb"
    store = DuckDBStore(path)
    try:
        flow = fork_flow(store, rows)
        log(f"  {label}: setup run, {PARTS} frames of {rows:,} rows")
        start = time.perf_counter()
        parent = flow.run(progress=False)
        case.setup_s = time.perf_counter() - start
        case.upstream_bytes = sum(parent.ref(f"part{i}").size for i in range(PARTS))
        gc.collect()  # the setup's frames are gone from memory before the clock starts
        bytes_before, count_before = _blob_totals(store)
        file_before = store.storage_bytes() or 0
        for threshold in np.linspace(0.1, 0.9, repeats):
            gc.collect()
            start = time.perf_counter()
            fork = parent.fork(from_step="report", threshold=float(threshold), progress=False)
            case.fork_s.append(time.perf_counter() - start)
            if fork.status != "completed" or fork.step_states().get("report") != "completed":
                raise RuntimeError(f"the fork did not complete: {fork.step_states()}")
            case.forks += 1
        bytes_after, count_after = _blob_totals(store)
        case.blob_bytes_written = bytes_after - bytes_before
        case.blobs_written = count_after - count_before
        case.file_bytes_growth = (store.storage_bytes() or 0) - file_before
    finally:
        store.close()
        for leftover in workdir.glob(f"{path.name}*"):
            leftover.unlink()
    log(f"  {label}: setup {case.setup_s:.1f} s, fork median {median(case.fork_s) * 1e3:.2f} ms")
    return case


def run_fork(
    workdir: Path,
    small_bytes: int,
    big_bytes: int,
    repeats: int,
    log: Callable[[str], None] = lambda _: None,
) -> ForkResult:
    """Both cases, small first, each in its own store file (removed afterwards)."""
    small = measure_case(workdir, _label(small_bytes), small_bytes, repeats, log)
    big = measure_case(workdir, _label(big_bytes), big_bytes, repeats, log)
    return ForkResult(small, big, repeats)


def _label(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 0.9995e9 else f"{n / 1e6:.3g} MB"


def fork_rows(result: ForkResult) -> list[Row]:
    """Fork time for each size, the big one against the small one; value bytes written."""
    small, big = result.small, result.big
    small_s, big_s = median(small.fork_s), median(big.fork_s)
    ratio_ok = big_s / small_s <= MAX_RATIO
    rows = [
        Row(
            f"fork, upstream {_label(small.upstream_bytes)}: time",
            Quantity(small_s, "s"),
            target=f"< {MAX_FORK_S * 1e3:g} ms",
            met=small_s < MAX_FORK_S,
        ),
        Row(
            f"fork, upstream {_label(big.upstream_bytes)}: time",
            Quantity(big_s, "s"),
            f"fork, upstream {_label(small.upstream_bytes)}",
            Quantity(small_s, "s"),
            target=f"< {MAX_FORK_S * 1e3:g} ms, <= {MAX_RATIO}x",
            met=big_s < MAX_FORK_S and ratio_ok,
        ),
    ]
    for case in (small, big):
        rows.append(
            Row(
                f"fork, upstream {_label(case.upstream_bytes)}: value bytes written",
                Quantity(case.blob_bytes_written / case.forks, "B"),
                f"{case.blobs_written} new values in {case.forks} forks; store file "
                f"+{case.file_bytes_growth / case.forks / 1024:.0f} KB/fork",
                target="0",
                met=case.blob_bytes_written == 0 and case.blobs_written == 0,
            )
        )
    return rows


def setup_note(result: ForkResult) -> str:
    """The setup runs' times, printed under the table."""
    return "fork setup runs: " + "; ".join(
        f"{_label(c.upstream_bytes)} upstream written in {c.setup_s:.1f} s"
        for c in (result.small, result.big)
    )
