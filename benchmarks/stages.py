"""The stages of ``python -m benchmarks``, each printed as soon as it ends.

A stage measures, then prints its notes and its table at once (stdout is flushed), so a
later stage that crashes hides nothing: its exception is caught, reported as ``stage X
failed: <error>`` (the traceback goes to stderr) and the next stage runs. Each stage works
in a folder of its own, removed when it ends. At the end, :func:`print_summary` prints
every row that has a target, and the stages that failed.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.report import Row


def _describe(result: Any) -> list[str]:
    return [f"{result.description}."]


def _nothing(result: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Stage:
    """One stage: what it logs when it starts, how it measures (in a folder of its
    own), and how its result becomes notes and rows."""

    name: str
    start: str
    measure: Callable[[Path], Any]
    rows: Callable[[Any], list[Row]]
    notes: Callable[[Any], list[str]] = _describe  # printed above the table
    after: Callable[[Any], list[str]] = _nothing  # printed below it


@dataclass
class Outcome:
    """What the stages measured: results and rows by stage, and the failures."""

    results: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, list[Row]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def all_rows(self) -> list[Row]:
        """Every stage's rows, in stage order."""
        return [row for rows in self.rows.values() for row in rows]


def print_stage(name: str, notes: Sequence[str], rows: Sequence[Row], after: Sequence[str]) -> None:
    """One stage's block: a title, its notes, its table, what follows it."""
    print(f"== {name} ==")
    for line in notes:
        print(line)
    if rows:
        print(report.format_table(rows))
    for line in after:
        print(line)
    print(flush=True)


def run_stages(
    stages: Sequence[Stage], workdir: Path, log: Callable[[str], None], only: Sequence[str] = ()
) -> Outcome:
    """Run each stage (those named in ``only``, if any) and print it as it ends."""
    outcome = Outcome()
    for stage in stages:
        if only and stage.name not in only:
            continue
        log(stage.start)
        folder = workdir / stage.name.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            result = stage.measure(folder)
            rows = stage.rows(result)
            notes, after = stage.notes(result), stage.after(result)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            error = f"{type(exc).__name__}: {exc}"
            outcome.failures[stage.name] = error
            print(f"stage {stage.name} failed: {error}", flush=True)
            print(flush=True)
            continue
        finally:
            outcome.seconds[stage.name] = time.perf_counter() - started
            shutil.rmtree(folder, ignore_errors=True)
        outcome.results[stage.name] = result
        outcome.rows[stage.name] = rows
        seconds = outcome.seconds[stage.name]
        print_stage(stage.name, notes, rows, [*after, f"({stage.name}: {seconds:.0f} s)"])
    return outcome


def print_summary(outcome: Outcome, footer: Sequence[str]) -> None:
    """Every row with a target, the stages that failed, and ``footer``."""
    targeted = [row for row in outcome.all_rows if row.target]
    missed = sum(1 for row in targeted if row.met is False)
    print("== summary: every target ==")
    print(report.format_table(targeted))
    print(
        f"{len(targeted)} targets: {sum(1 for r in targeted if r.met)} met, {missed} missed, "
        f"{sum(1 for r in targeted if r.met is None)} without a verdict (not measured, "
        "or a --quick size)."
    )
    for name, error in outcome.failures.items():
        print(f"stage {name} failed: {error}")
    for line in footer:
        print(line)
    sys.stdout.flush()
