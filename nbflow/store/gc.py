"""Retention: which runs a policy keeps, which blobs nothing references, what gc did."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbflow.errors import ParameterError
from nbflow.store.records import EventType, RunRecord, utcnow

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.store.core import StoreCore as Store

#: What ``older_than=`` accepts: a timedelta, a number of days, or text like "7d", "12h".
Age = dt.timedelta | float | int | str


@dataclass(frozen=True)
class GcReport:
    """What ``store.gc`` removed (or, with ``dry_run=True``, would remove)."""

    runs: tuple[str, ...]
    blobs: tuple[str, ...]
    bytes_freed: int  # the size of the purged values
    dry_run: bool
    file_bytes_before: int | None = None
    file_bytes_after: int | None = None
    kept_runs: int = 0
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        text = (
            f"gc {verb} {len(self.runs)} run(s) and {len(self.blobs)} value(s), "
            f"{_size(self.bytes_freed)} of values; kept {self.kept_runs} run(s)"
        )
        if self.file_bytes_before is not None and self.file_bytes_after is not None:
            text += (
                f"; store file {_size(self.file_bytes_before)} -> {_size(self.file_bytes_after)}"
            )
        skipped = self.details.get("compaction_skipped")
        if skipped:
            text += f"; the file was not compacted: {skipped}"
        executing = self.details.get("values_kept_for_executing_runs")
        if executing:
            text += (
                f"; no value removed while run(s) {', '.join(executing)} execute "
                "(gc again once they have finished)"
            )
        return text

    def to_frame(self) -> pd.DataFrame:
        """One row per removed run and per removed value."""
        import pandas as pd

        rows = [{"kind": "run", "id": r} for r in self.runs]
        rows += [{"kind": "value", "id": h} for h in self.blobs]
        return pd.DataFrame(rows, columns=["kind", "id"])


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


#: The units of ``older_than`` text ("7d", "12h", "1d 12h", "30 minutes"), read here:
#: pandas deprecates "d" and "w", and reads a bare number as nanoseconds, "" as NaT.
_UNITS = {
    **dict.fromkeys(("w", "week", "weeks"), "weeks"),
    **dict.fromkeys(("d", "day", "days"), "days"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "hours"),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), "minutes"),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "seconds"),
}
_AGE_PART = re.compile(r"\s*([-+]?\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]+)\s*")


def _parse_age_text(text: str) -> dt.timedelta | None:
    """A duration written as number-unit parts, else whatever pandas reads (ISO 8601,
    "1 days 02:00:00"); None if neither, or if it has no unit at all."""
    total, pos = dt.timedelta(0), 0
    try:
        while (part := _AGE_PART.match(text, pos)) and part[2].lower() in _UNITS:
            total += dt.timedelta(**{_UNITS[part[2].lower()]: float(part[1])})
            pos = part.end()
    except OverflowError:
        return None
    if pos and pos == len(text):
        return total
    if not any(c.isalpha() for c in text):  # "7": a unit is needed
        return None
    import pandas as pd

    try:
        parsed = pd.Timedelta(text)
    except (ValueError, OverflowError):
        return None
    return None if pd.isna(parsed) else parsed.to_pytimedelta()


def parse_age(older_than: Age) -> dt.timedelta:
    """``older_than`` as a timedelta; a clear error for anything else."""
    if isinstance(older_than, dt.timedelta):
        age = older_than
    elif isinstance(older_than, int | float) and not isinstance(older_than, bool):
        try:
            age = dt.timedelta(days=float(older_than))
        except (ValueError, OverflowError):  # nan, inf, too many days
            raise ParameterError(
                f"older_than={older_than!r} is not a usable number of days"
            ) from None
    elif isinstance(older_than, str):
        parsed = _parse_age_text(older_than)
        if parsed is None:
            raise ParameterError(
                f"older_than={older_than!r} is not a duration: use e.g. '7d', '12h' (a "
                "unit is needed), a number of days, or a datetime.timedelta."
            )
        age = parsed
    else:
        raise ParameterError(
            f"older_than must be a duration ('7d', a number of days or a timedelta), not "
            f"{type(older_than).__name__}"
        )
    if age < dt.timedelta(0):
        raise ParameterError(f"older_than must not be negative, not {older_than!r}")
    return age


def runs_to_delete(
    runs: Iterable[RunRecord],
    *,
    keep_last: int | None,
    older_than: Age | None,
    now: dt.datetime | None = None,
) -> list[RunRecord]:
    """The runs outside the policy. A run is kept if it is pending, running or waiting
    at a gate (its values are what a person is asked to approve), or among
    the ``keep_last`` newest of its flow, or newer than ``older_than``; the rules add up
    (a run any rule keeps is kept). With neither rule, no run is deleted."""
    if keep_last is not None and (
        not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 0
    ):
        raise ParameterError(f"keep_last must be a whole number >= 0, not {keep_last!r}")
    if keep_last is None and older_than is None:
        return []
    cutoff = None
    if older_than is not None:
        age = parse_age(older_than)
        try:
            cutoff = (now or utcnow()) - age
        except OverflowError:  # older than year 1: no run is
            cutoff = dt.datetime.min.replace(tzinfo=dt.UTC)
    by_flow: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_flow.setdefault(run.flow, []).append(run)
    doomed = []
    for flow_runs in by_flow.values():
        flow_runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        for rank, run in enumerate(flow_runs):
            if run.status.value in ("pending", "running", "waiting"):
                continue
            if keep_last is not None and rank < keep_last:
                continue
            if cutoff is not None and run.created_at >= cutoff:
                continue
            doomed.append(run)
    return doomed


def refs_in_payload(event_type: EventType, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stored values an event refers to (its output, and a fork's reused outputs), as
    the JSON refs it carries; inline JSON values, which have no blob, are left out.

    A ``run_started`` event refers to the values of the run's record (its code, its
    environment and the data globals its steps read: :mod:`nbflow.engine.provenance`)."""
    found: list[dict[str, Any]] = []
    output = payload.get("output")
    if isinstance(output, dict) and output.get("codec") != "json" and output.get("hash"):
        found.append(output)
    record = payload.get("record")
    if event_type is EventType.RUN_STARTED and isinstance(record, dict):
        candidates = [record.get("code"), record.get("environment")]
        for refs in (record.get("data") or {}).values():
            candidates += list(refs.values()) if isinstance(refs, dict) else []
        for ref in candidates:
            if isinstance(ref, dict) and ref.get("codec") != "json" and ref.get("hash"):
                found.append(ref)
    if event_type is EventType.RUN_FORKED:
        for row in (payload.get("reused") or {}).values():
            ref = row.get("output") or {}
            if ref.get("codec") != "json" and ref.get("hash"):
                found.append(ref)
    return found


def hashes_in_payload(event_type: EventType, payload: dict[str, Any]) -> set[str]:
    """The value hashes an event refers to (outputs, and a fork's reused outputs)."""
    return {ref["hash"] for ref in refs_in_payload(event_type, payload)}


def referenced_hashes(store: Store, run_ids: Iterable[str]) -> set[str]:
    """Every value hash the events of ``run_ids`` refer to (the generic, slow way)."""
    found: set[str] = set()
    for run_id in run_ids:
        for event in store.read_events(run_id):
            found |= hashes_in_payload(event.type, dict(event.payload))
    return found
