"""What the browser's tables show for runs, versions, events and a run's lineage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nbflow.store.records import Event, RunRecord
from nbflow.widgets.states import format_duration
from nbflow.widgets.summary import plural

if TYPE_CHECKING:
    from nbflow.api.run import Run


def fork_point(r: RunRecord) -> str:
    """``parent at step s`` / ``parent at vN`` for a fork; '' for a run started afresh."""
    if not r.parent_run_id:
        return ""
    if r.fork_from_step:
        return f"{r.parent_run_id} at step {r.fork_from_step}"
    if r.fork_from_version is not None:
        return f"{r.parent_run_id} at v{r.fork_from_version}"
    return r.parent_run_id


def version_rows(run: Run) -> list[tuple[int, str]]:
    """The run's versions (one per state-changing event), each with what happened."""
    out = []
    for row in run.versions.to_dict("records"):
        words = (str(row["type"]), str(row["step"]))
        what = " ".join(x for x in words if x not in ("", "None", "nan"))
        done = plural(int(row["steps_completed"]), "step")
        out.append((int(row["version"]), f"{what} · {done} done"))
    return out


def event_detail(event: Event) -> str:
    """A short summary of an event's payload."""
    p = event.payload
    if p.get("error"):
        return str(p["error"]).splitlines()[0]
    if "duration_ms" in p and p["duration_ms"] is not None:
        return f"took {format_duration(float(p['duration_ms']))}"
    if p.get("source_run_id"):
        return f"output from run {p['source_run_id']}"
    if p.get("reason"):
        return str(p["reason"])
    if p.get("parent_run_id"):
        return f"forked from run {p['parent_run_id']}"
    return ""


def lineage_tree(runs: Sequence[RunRecord]) -> list[tuple[RunRecord, RunRecord | None, int]]:
    """Runs of one thread as a depth-first tree: (run, its parent, depth), oldest first."""
    by_id = {r.run_id: r for r in runs}
    children: dict[str | None, list[RunRecord]] = {}
    for r in sorted(runs, key=lambda r: (r.created_at, r.run_id)):
        parent = r.parent_run_id if r.parent_run_id in by_id else None
        children.setdefault(parent, []).append(r)
    out: list[tuple[RunRecord, RunRecord | None, int]] = []

    def walk(parent: str | None, depth: int) -> None:
        for r in children.get(parent, []):
            out.append((r, by_id.get(parent) if parent else None, depth))
            walk(r.run_id, depth + 1)

    walk(None, 0)
    return out


def changed_params(run: RunRecord, parent: RunRecord | None) -> dict[str, Any]:
    """The parameters of ``run`` that differ from its parent's (all of them for a root)."""
    if parent is None:
        return dict(run.params)
    return {k: v for k, v in run.params.items() if parent.params.get(k) != v}
