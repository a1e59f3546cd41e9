"""Storage grows with the data, not with the number of values: what a small DataFrame
costs on disk, and what thousands of runs of a small flow cost in file size and time.

Each is measured twice in this process, side by side: with the store's layout (a frame
under 256 KB kept in its blob row) and with every frame a table of its own (the layout
before, ``store.compact_frame_bytes = 0``), each in a fresh DuckDB file.

* A 100-row frame on disk: 1,000 distinct frames (int64, float64 and ``str`` columns, as
  a step would return them) are stored, the file is checkpointed, and its growth is
  divided by 50. Beside it: the same data as a float64 array.
* A small flow, run ``runs`` times (2,000 for ``make bench``) with a new parameter each
  time, so each run stores new values: ``raw(seed)`` (a 100-row frame) ->
  ``features`` (a frame) -> ``summary`` (a dict), and ``vector`` (an array of ``raw``'s
  column). The file size is taken once the store is closed (checkpointed). Time per run:
  the median of runs 11-30 against that of the last 20; and, since a shared machine's load
  drifts over minutes, also side by side at the end: 20 more runs on the grown store
  interleaved with 20 on a store that has 20 runs, medians compared.

Both layouts run today's engine: the doubling of time per run over 2,000 runs came mostly
from the cache lookup parsing every past key's output (fixed in the store, for both), so
the second layout's rows show what tables of their own cost, not all of the old figures.
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
from nbflow.values import encode

FRAME_ROWS = 100
FRAMES = 1_000  # enough that whole 256 KB blocks hardly decide the figure
MAX_FRAME_BYTES = 32 * 1024
MAX_FLOW_BYTES = 40e6
FLOW_RUNS = 2_000  # the runs MAX_FLOW_BYTES is for
MAX_GROWTH = 1.2  # time per run at the last run / at run 20
WINDOW = 20


@dataclass
class LayoutCase:
    """One layout: what a small frame and the flow's runs cost in it."""

    label: str
    compact: bool
    frame_bytes: float = 0.0
    array_bytes: float = 0.0
    runs: int = 0
    file_bytes: int = 0
    run_s: list[float] = field(default_factory=list)
    grown_s: list[float] = field(default_factory=list)  # side by side, on the grown store
    young_s: list[float] = field(default_factory=list)  # side by side, on a 20-run store

    @property
    def early(self) -> float:
        """Median time per run around run 20 (runs 11-30)."""
        return median(self.run_s[10 : 10 + WINDOW])

    @property
    def late(self) -> float:
        """Median time per run of the last 20 runs."""
        return median(self.run_s[-WINDOW:])


@dataclass
class StorageResult:
    """Both layouts."""

    runs: int
    cases: list[LayoutCase] = field(default_factory=list)

    @property
    def description(self) -> str:
        """One line for the report's header."""
        return (
            f"storage: {FRAMES} {FRAME_ROWS}-row frames, checkpointed; a 4-step flow (two "
            f"100-row frames, a dict, an array a run) run {self.runs:,} times with new values; "
            + (
                "each in the store's layout and with every frame a table (the layout before)"
                if len(self.cases) > 1
                else "in the store's layout"
            )
        )


def small_frame(seed: int) -> pd.DataFrame:
    """A 100-row frame as a step would return it."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(FRAME_ROWS),
            "x": rng.random(FRAME_ROWS),
            "label": [f"k{i % 7}" for i in range(FRAME_ROWS)],
        }
    )


def open_store(path: Path, compact: bool) -> DuckDBStore:
    """A fresh store in ``path``, in the given layout."""
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)
    store = DuckDBStore(path)
    if not compact:
        store.compact_frame_bytes = 0
    return store


def _file_bytes(path: Path) -> int:
    wal = path.with_name(path.name + ".wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def bytes_per_value(path: Path, compact: bool, values: list[object]) -> float:
    """File growth per value, once checkpointed, for ``values`` put into a fresh store."""
    store = open_store(path, compact)
    try:
        store._con.execute("CHECKPOINT")
        before = _file_bytes(path)
        for value in values:
            store.put_value(encode(value, step="s"))
        store._con.execute("CHECKPOINT")
        return (_file_bytes(path) - before) / len(values)
    finally:
        store.close()


def small_flow(store: DuckDBStore) -> nf.Flow:
    """The benchmark flow (see the module docstring)."""
    flow = nf.Flow("storage-bench", store=store)

    @flow.step
    def raw(seed: int = 0) -> pd.DataFrame:
        return small_frame(seed)

    @flow.step
    def features(raw: pd.DataFrame) -> pd.DataFrame:
        return raw.assign(y=raw["x"] * 2)

    @flow.step
    def summary(features: pd.DataFrame) -> dict[str, float]:
        return {"mean": float(features["y"].mean()), "n": len(features)}

    @flow.step
    def vector(raw: pd.DataFrame) -> np.ndarray:
        return raw["x"].to_numpy()

    return flow


def _timed_run(flow: nf.Flow, seed: int) -> float:
    started = time.perf_counter()
    flow.run(seed=seed, progress=False)
    return time.perf_counter() - started


def measure_layout(workdir: Path, case: LayoutCase, runs: int, log: Callable[[str], None]) -> None:
    """Fill ``case``: a small frame's cost, then ``runs`` runs of the flow."""
    frames = [small_frame(i) for i in range(FRAMES)]
    case.frame_bytes = bytes_per_value(workdir / "frames.duckdb", case.compact, list(frames))
    arrays = [np.column_stack([f["id"], f["x"]]) for f in frames]  # (the labels left out)
    case.array_bytes = bytes_per_value(workdir / "arrays.duckdb", case.compact, list(arrays))
    path, young_path = workdir / "flow.duckdb", workdir / "young.duckdb"
    store, young = open_store(path, case.compact), open_store(young_path, case.compact)
    try:
        flow, young_flow = small_flow(store), small_flow(young)
        gc.collect()
        for i in range(runs):
            case.run_s.append(_timed_run(flow, i))
            if (i + 1) % max(runs // 5, 1) == 0:
                log(f"    {case.label}: {i + 1:,} runs, {_file_bytes(path) / 1e6:.1f} MB")
        for i in range(WINDOW):
            _timed_run(young_flow, i)
        for i in range(WINDOW):  # side by side: the same load on both
            case.grown_s.append(_timed_run(flow, runs + i))
            case.young_s.append(_timed_run(young_flow, WINDOW + i))
        case.runs = runs
    finally:
        store.close()
        young.close()
    case.file_bytes = _file_bytes(path)  # closed: checkpointed, no WAL left
    for leftover in (path, young_path, workdir / "frames.duckdb", workdir / "arrays.duckdb"):
        for name in (leftover, leftover.with_name(leftover.name + ".wal")):
            name.unlink(missing_ok=True)


def run_storage(
    workdir: Path, runs: int, log: Callable[[str], None] = print, old_layout: bool = True
) -> StorageResult:
    """Measure both layouts, the store's own first (only it without ``old_layout``)."""
    result = StorageResult(runs)
    layouts = ((True, "now"), (False, "every frame a table"))
    for compact, label in layouts if old_layout else layouts[:1]:
        log(f"  layout: {label}")
        case = LayoutCase(label, compact)
        measure_layout(workdir, case, runs, log)
        result.cases.append(case)
    return result


def storage_rows(result: StorageResult) -> list[Row]:
    """File bytes per small frame and per flow, and time-per-run growth, for each layout."""
    rows = []
    for case in result.cases:
        now = case.compact
        rows.append(
            Row(
                f"storage ({case.label}): a {FRAME_ROWS}-row frame on disk",
                Quantity(case.frame_bytes, "B"),
                "the same data as an array",
                Quantity(case.array_bytes, "B"),
                target=f"<= {MAX_FRAME_BYTES // 1024} KB" if now else "",
                met=case.frame_bytes <= MAX_FRAME_BYTES if now else None,
            )
        )
        full = case.runs >= FLOW_RUNS  # (a --quick run has fewer: no verdict)
        rows.append(
            Row(
                f"storage ({case.label}): file after {case.runs:,} runs of a small flow",
                Quantity(case.file_bytes / 1e6, "MB"),
                f"{case.file_bytes / max(case.runs, 1) / 1024:.1f} KB a run",
                target=f"<= {MAX_FLOW_BYTES / 1e6:g} MB at {FLOW_RUNS:,} runs" if now else "",
                met=case.file_bytes <= MAX_FLOW_BYTES if now and full else None,
            )
        )
        rows.append(
            Row(
                f"storage ({case.label}): time per run at run {case.runs:,} (last {WINDOW})",
                Quantity(case.late, "s"),
                f"at run {WINDOW} (runs 11-{10 + WINDOW})",
                Quantity(case.early, "s"),
                target=f"<= {MAX_GROWTH}x" if now else "",
                met=case.late / case.early <= MAX_GROWTH if now else None,
            )
        )
        grown, young = median(case.grown_s), median(case.young_s)
        rows.append(
            Row(
                f"storage ({case.label}): time per run at run {case.runs:,}, side by side",
                Quantity(grown, "s"),
                f"at run {WINDOW}, interleaved",
                Quantity(young, "s"),
                target=f"<= {MAX_GROWTH}x" if now else "",
                met=grown / young <= MAX_GROWTH if now else None,
            )
        )
    return rows
