"""A pipeline of 4 steps, each making a ~1 GB DataFrame from the one before: the wall
time of ``flow.run`` against the steps' compute alone, in each durability mode.

``frame0`` draws ``COLUMNS`` float64 columns of random numbers; ``frame1..3`` each scale
the frame before (one multiplication: a cheap transform, a new frame of the same size).
Each (repetition, mode) is a process of its own (``python -m benchmarks.frames_pipeline
--mode M --bytes B --workdir DIR``, one JSON line back), so the frames' memory goes back
to the system between them. In it:

1. a warm-up run of the flow with tiny frames (imports, DuckDB), into its own file;
2. the compute alone, twice: the four functions called directly, in order, each timed,
   all four frames kept (as the run keeps them), then dropped. The second pass is the
   reference: fresh memory is much of a 1 GB frame's cost, and on a virtual machine the
   first touch of memory the host has not backed yet costs several times a later one
   (the first pass, the one after the run and the reference are all in the notes);
3. ``flow.run(rows=..., durability=M)`` into a fresh DuckDB file opened before the clock;
   the run returns once everything it did is committed, in every mode;
4. the compute alone once more, after the run.

The target (issue 16): in ``async`` mode, the run's wall time <= 1.15x the compute alone.
"""

from __future__ import annotations

import argparse
import gc
import inspect
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

import numpy as np
import pandas as pd

import nbflow as nf
from benchmarks.report import Quantity, Row
from benchmarks.timing import format_seconds, median

COLUMNS = 8
MAX_ASYNC_RATIO = 1.15
TIMEOUT_S = 900
ROOT = Path(__file__).resolve().parents[1]


def frame0(rows: int = 1_000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(rows) for i in range(COLUMNS)})


def frame1(frame0: pd.DataFrame) -> pd.DataFrame:
    return frame0 * 1.0001


def frame2(frame1: pd.DataFrame) -> pd.DataFrame:
    return frame1 * 1.0001


def frame3(frame2: pd.DataFrame) -> pd.DataFrame:
    return frame2 * 1.0001


STEPS: tuple[Callable[..., pd.DataFrame], ...] = (frame0, frame1, frame2, frame3)


# -- in the measuring process ---------------------------------------------------------------


def build_flow(store: Path) -> nf.Flow:
    """The 4-step pipeline in a flow on ``store``."""
    flow = nf.Flow("frames-pipeline", store=str(store))
    for func in STEPS:
        flow.step(func)
    return flow


def compute_alone(rows: int) -> list[float]:
    """Seconds of each step called directly, in order, every frame kept until the end."""
    gc.collect()
    seconds, values = [], []
    for func in STEPS:
        started = time.perf_counter()
        values.append(func(rows) if func is frame0 else func(values[-1]))
        seconds.append(time.perf_counter() - started)
    del values
    gc.collect()
    return seconds


def run_options(mode: str) -> dict[str, Any] | None:
    """``flow.run``'s options for ``mode``; None if this build has no such mode."""
    if "durability" in inspect.signature(nf.Flow.run).parameters:
        return {"progress": False, "durability": mode}
    return {"progress": False} if mode == "sync" else None


def timed_run(store: Path, rows: int, options: dict[str, Any]) -> float:
    """Wall seconds of one first run of the pipeline into a fresh store."""
    flow = build_flow(store)
    _ = flow.store
    try:
        gc.collect()
        started = time.perf_counter()
        run = flow.run(rows=rows, **options)
        wall = time.perf_counter() - started
        if run.status != "completed" or len(run.steps) != len(STEPS):
            raise RuntimeError(f"the pipeline run ended {run.status}: {run.error}")
        del run
    finally:
        flow.store.close()
    return wall


def measure(mode: str, frame_bytes: int, workdir: Path) -> dict[str, Any]:
    """Warm up, time the compute alone, then the run (see the module docstring)."""
    options = run_options(mode)
    if options is None:
        return {"unsupported": "not on this build (no durability=)"}
    workdir.mkdir(parents=True, exist_ok=True)
    rows = max(frame_bytes // (8 * COLUMNS), 1)
    timed_run(workdir / "warm.duckdb", 1_000, options)
    # Fresh memory is much of a 1 GB frame's cost, and on a virtual machine the first
    # touch of memory the host has not backed yet costs several times a later one: a
    # first pass warms it (the run then gets pages as warm as the measured pass had).
    first = compute_alone(rows)
    before = compute_alone(rows)
    wall = timed_run(workdir / "pipeline.duckdb", rows, options)
    after = compute_alone(rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # (KiB on Linux)
    return {"compute": before, "first": first, "after": after, "wall": wall, "peak_rss": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one run of the 1 GB-frames pipeline")
    parser.add_argument("--mode", default="sync")
    parser.add_argument("--bytes", type=int, default=1_000_000_000)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.mode, args.bytes, args.workdir)), flush=True)


# -- the stage -----------------------------------------------------------------------------


@dataclass
class PipelineResult:
    """Per mode: the compute alone (sum over the steps) and the run's wall, in seconds."""

    frame_bytes: int
    repeats: int
    compute_s: dict[str, list[float]] = field(default_factory=dict)  # the reference pass
    first_s: dict[str, list[float]] = field(default_factory=dict)  # the warming pass
    after_s: dict[str, list[float]] = field(default_factory=dict)  # the pass after the run
    wall_s: dict[str, list[float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    peak_rss: int = 0

    @property
    def description(self) -> str:
        """One line for the stage's header."""
        return (
            f"frames pipeline: 4 steps, each a {self.frame_bytes / 1e9:g} GB DataFrame "
            f"({COLUMNS} float64 columns) made from the one before; a process per "
            f"(repetition, mode), {self.repeats} repetition(s), medians; compute alone = the "
            "same functions called directly in that process (2nd of 2 passes before the run); "
            "peak RSS of a "
            f"process {self.peak_rss / 1e9:.1f} GB"
        )


def _one(mode: str, frame_bytes: int, workdir: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "benchmarks.frames_pipeline", "--mode", mode]
    command += ["--bytes", str(frame_bytes), "--workdir", str(workdir)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer within {TIMEOUT_S} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exit code {done.returncode}: {tail[:300]}")
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


def run_pipeline(
    workdir: Path, frame_bytes: int, repeats: int, log: Callable[[str], None] = print
) -> PipelineResult:
    """Every mode, ``repeats`` times, interleaved; each run's files removed after it."""
    result = PipelineResult(frame_bytes, repeats)
    for rep in range(repeats):
        for mode in ("sync", "async", "exit"):
            if mode in result.unavailable:
                continue
            log(f"  frames pipeline: {mode}, repetition {rep + 1}/{repeats}")
            folder = workdir / f"pipeline-{mode}-{rep}"
            try:
                answer = _one(mode, frame_bytes, folder)
            except RuntimeError as exc:
                log(f"    {mode}: failed: {exc}")
                result.unavailable[mode] = f"failed: {exc}"
                continue
            finally:
                for path in folder.glob("*"):
                    path.unlink(missing_ok=True)
            if "unsupported" in answer:
                result.unavailable[mode] = answer["unsupported"]
                continue
            result.compute_s.setdefault(mode, []).append(sum(answer["compute"]))
            result.first_s.setdefault(mode, []).append(sum(answer["first"]))
            result.after_s.setdefault(mode, []).append(sum(answer["after"]))
            result.wall_s.setdefault(mode, []).append(answer["wall"])
            result.peak_rss = max(result.peak_rss, int(answer["peak_rss"]))
    return result


def pipeline_rows(result: PipelineResult) -> list[Row]:
    """The run's wall against the compute alone, per mode."""
    size = f"4 x {result.frame_bytes / 1e9:g} GB frames"
    rows = []
    for mode in ("sync", "async", "exit"):
        target = f"<= {MAX_ASYNC_RATIO}x" if mode == "async" else ""
        if mode not in result.wall_s:
            why = result.unavailable.get(mode, "not measured")
            rows.append(Row(f"{size}: flow.run wall, {mode}", Quantity.missing(why), target=target))
            continue
        wall, compute = median(result.wall_s[mode]), median(result.compute_s[mode])
        rows.append(
            Row(
                f"{size}: flow.run wall, {mode}",
                Quantity(wall, "s"),
                "the steps' compute alone",
                Quantity(compute, "s"),
                target=target,
                met=wall / compute <= MAX_ASYNC_RATIO if target else None,
            )
        )
    return rows


def pipeline_notes(result: PipelineResult) -> list[str]:
    """The lines printed above the table."""
    lines = [f"{result.description}."]
    for mode, walls in result.wall_s.items():
        extra = median(walls) - median(result.compute_s[mode])
        per_gb = extra / (4 * result.frame_bytes / 1e9)
        lines.append(
            f"  {mode}: {format_seconds(extra)} beyond the compute, "
            f"{format_seconds(per_gb)} per GB checkpointed; compute passes: first "
            f"{format_seconds(median(result.first_s[mode]))}, reference "
            f"{format_seconds(median(result.compute_s[mode]))}, after the run "
            f"{format_seconds(median(result.after_s[mode]))}"
        )
    return lines


if __name__ == "__main__":
    main()
