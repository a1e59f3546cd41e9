"""The benchmark table: medians, ratios to the references, targets, and the JSON dump."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from benchmarks.dataframes import FrameResult
from benchmarks.timing import format_seconds, median

MIN_WRITE_RATIO = 0.9  # of DuckDB's own Arrow ingest (from_pandas included)
MIN_READ_RATIO = 0.9  # of pickle.load from a file of the same frame


@dataclass(frozen=True)
class Quantity:
    """A median value: seconds (per step, unit ``s``), a rate (unit ``GB/s``) or bytes
    (unit ``B``)."""

    value: float
    unit: str
    seconds: float | None = None  # the median time behind a rate
    note: str = ""  # instead of a value: why there is none ("not installed", ...)

    @classmethod
    def missing(cls, note: str) -> Quantity:
        """No value, and why."""
        return cls(float("nan"), "", note=note)

    def ratio_to(self, other: Quantity | None) -> float | None:
        """This value over ``other``'s (None if either has none, or ``other`` is 0)."""
        if other is None or self.note or other.note or other.value == 0:
            return None
        return self.value / other.value

    def text(self) -> str:
        """The quantity as the table shows it."""
        if self.note:
            return self.note
        if self.unit == "s":
            return format_seconds(self.value)
        if self.unit == "B":
            return f"{self.value:,.0f} B"
        shown = f"{self.value:.2f} {self.unit}"
        return f"{shown} ({format_seconds(self.seconds)})" if self.seconds is not None else shown


@dataclass(frozen=True)
class Row:
    """One line of the table. ``ratio`` is the measured value (``nbflow``: nbflow's, or a
    peer's in the side-by-side rows) / the reference, in the row's unit."""

    metric: str
    nbflow: Quantity
    reference: str = ""
    reference_value: Quantity | None = None
    target: str = ""
    met: bool | None = None
    show_ratio: bool = True  # off where the ratio means nothing (overhead vs a ~0 floor)

    @property
    def ratio(self) -> float | None:
        """nbflow's value over the reference's (time ratio or rate ratio)."""
        return self.nbflow.ratio_to(self.reference_value) if self.show_ratio else None

    def cells(self) -> list[str]:
        """The row's table cells."""
        reference = self.reference
        if self.reference_value is not None:
            reference = f"{reference}: {self.reference_value.text()}"
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else ""
        met = "" if self.met is None else ("yes" if self.met else "NO")
        return [self.metric, self.nbflow.text(), reference, ratio, self.target, met]


HEADER = ["metric", "measured", "reference", "ratio", "target", "met"]


# -- rows ----------------------------------------------------------------------------------


def _rate(result: FrameResult, name: str) -> Quantity:
    seconds = median(result.samples[name])
    return Quantity(result.nbytes / seconds / 1e9, "GB/s", seconds)


def frame_rows(result: FrameResult) -> list[Row]:
    """Write and read rates of the frame against DuckDB and pickle."""
    size = f"{result.rows / 1e6:g}M rows"
    write, read = _rate(result, "nbflow_write"), _rate(result, "nbflow_read")
    duckdb_write = _rate(result, "duckdb_write")
    pickle_read = _rate(result, "pickle_read")
    return [
        Row(
            f"DataFrame write, {size}",
            write,
            "DuckDB Arrow ingest incl. from_pandas",
            duckdb_write,
            target=f">= {MIN_WRITE_RATIO}x",
            met=write.value / duckdb_write.value >= MIN_WRITE_RATIO,
        ),
        Row(
            f"DataFrame write, {size}",
            write,
            "DuckDB Arrow ingest only",
            _rate(result, "duckdb_ingest"),
        ),
        Row(f"DataFrame write, {size}", write, "pickle.dump+fsync", _rate(result, "pickle_write")),
        Row(
            f"DataFrame read, {size}",
            read,
            "pickle.load",
            pickle_read,
            target=f">= {MIN_READ_RATIO:g}x",
            met=read.value / pickle_read.value >= MIN_READ_RATIO,
        ),
        Row(
            f"DataFrame read, {size}",
            read,
            "DuckDB to_arrow_table().to_pandas()",
            _rate(result, "duckdb_read"),
        ),
    ]


def breakdown(result: FrameResult) -> list[str]:
    """Where nbflow's and DuckDB's write time goes (median seconds)."""
    m = {name: median(samples) for name, samples in result.samples.items()}
    return [
        f"nbflow write = encode {format_seconds(m['nbflow_encode'])} "
        f"+ put_value {format_seconds(m['nbflow_put'])}",
        f"DuckDB write = from_pandas {format_seconds(m['duckdb_from_pandas'])} "
        f"+ CTAS/COMMIT {format_seconds(m['duckdb_ingest'])}",
        f"nbflow read includes the check of the frame's table (row count + digest) "
        f"{format_seconds(m['nbflow_table_check'])} "
        f"({m['nbflow_table_check'] / m['nbflow_read']:.0%} of the read); the write computes "
        "the same digest",
    ]


# -- output --------------------------------------------------------------------------------


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table."""
    cells = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def to_json(
    path: Path,
    *,
    settings: dict[str, Any],
    rows: Sequence[Row],
    stages: dict[str, Any],
    failures: dict[str, str],
) -> None:
    """Write the settings, the table's numbers, every stage's raw samples (seconds; a
    dataclass each) and the stages that failed to ``path``."""
    data = {
        "settings": settings,
        "rows": [{**asdict(row), "ratio": row.ratio} for row in rows],
        "samples": {
            name: asdict(result) if is_dataclass(result) else result
            for name, result in stages.items()
        },
        "failures": failures,
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
