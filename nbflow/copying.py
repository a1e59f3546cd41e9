"""Copying runs from one store to another, between any two backends, forks included.

:func:`copy_runs` moves each run as it stands: its flow definition, its record, every
event in order (same seq, timestamps and payloads) and every value it refers to. The
target folds the events into its own views, so its step executions come out the same.
Values move in their stored form (:meth:`~nbflow.store.base.Store.read_encoded`): never
decoded, so a pickle is never unpickled and a DataFrame never goes through pandas.

Every check happens before anything is written: unknown runs, runs still running, runs
the target holds with other content, values missing from the source, and values that do
not hash to their name (each is hashed again from its stored form, as ``check`` does: a
damaged or tampered source cannot plant content under another hash). Then, per run
(parents first): its flow definition, its values, and its row with its whole log in one
append. A copy that stops midway (a crash, a lost connection) is finished by copying
again: values are content-addressed, a run already copied is skipped, and a run whose
row was written without its log gets its log.

A pending run is copied as it stands; a running one is refused (copy it once it has
finished, or was cancelled or interrupted).

A pickle or a run marked as someone else's (:mod:`nbflow.store.untrusted`) stays marked
in the target; one copied from a store opened with ``trust=False`` is marked there, so
opening the target trusted neither makes such a pickle loadable nor lets such a run's
outputs stand in for your steps (cache hits). A run is marked before its log is written.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbflow.errors import CorruptStoreError, ParameterError, TransferError, UnknownRunError
from nbflow.store.fold import fold
from nbflow.store.gc import _size, refs_in_payload
from nbflow.store.open import StoreLike, open_store
from nbflow.store.records import (
    Codec,
    Event,
    EventType,
    NewEvent,
    RunRecord,
    RunStatus,
    ValueRef,
    utcnow,
)
from nbflow.store.untrusted import UntrustedRun, keeps_marks, marked, origin, unmarked
from nbflow.transfer.archives import add_run

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.store.base import Store
    from nbflow.values import EncodedValue

__all__ = ["CopyReport", "RunCopy", "copy_runs"]

#: What :class:`RunCopy` says was done with a run.
COPIED, UPDATED, SKIPPED = "copied", "updated", "skipped"


@dataclass(frozen=True)
class RunCopy:
    """What a copy did with one run.

    ``action`` is ``copied`` (new in the target), ``updated`` (the target held the start
    of its log, from an earlier copy: the rest was appended) or ``skipped`` (the target
    already held all of it). ``ancestor`` is true for a run copied because a requested
    run forks it or reuses its outputs.
    """

    run_id: str
    flow: str
    status: str
    action: str
    events: int = 0  # events appended to the target
    values: int = 0  # values written to the target (not already there)
    bytes: int = 0  # their size
    ancestor: bool = False

    def __str__(self) -> str:
        text = f"{self.action} run {self.run_id} (flow {self.flow!r}, {self.status}"
        if self.action == SKIPPED:
            text += ", already in the target"
        else:
            text += f", {self.events} event(s), {self.values} value(s), {_size(self.bytes)}"
        return text + (", an ancestor)" if self.ancestor else ")")


@dataclass(frozen=True)
class CopyReport:
    """What :func:`copy_runs` did: one :class:`RunCopy` per run, in the order copied
    (parents before forks), and the ancestors it could not find in the source."""

    source: str
    target: str
    runs: tuple[RunCopy, ...]
    #: Runs a copied run forks or reuses outputs from that the source no longer holds
    #: (removed by gc); their values were copied all the same.
    missing: tuple[str, ...] = field(default=())

    @property
    def copied(self) -> tuple[str, ...]:
        """The ids of the runs written to the target (copied or updated)."""
        return tuple(r.run_id for r in self.runs if r.action != SKIPPED)

    @property
    def skipped(self) -> tuple[str, ...]:
        """The ids of the runs the target already held in full."""
        return tuple(r.run_id for r in self.runs if r.action == SKIPPED)

    @property
    def values(self) -> int:
        """How many values were written to the target."""
        return sum(r.values for r in self.runs)

    @property
    def bytes(self) -> int:
        """The size of the values written to the target."""
        return sum(r.bytes for r in self.runs)

    def __str__(self) -> str:
        text = (
            f"copied {len(self.copied)} run(s) from {self.source} to {self.target}, skipped "
            f"{len(self.skipped)} already there; wrote {self.values} value(s), "
            f"{_size(self.bytes)}"
        )
        if self.missing:
            text += (
                f"; run(s) {', '.join(self.missing)}, which copied runs fork or reuse "
                "outputs from, are no longer in the source (their values were copied)"
            )
        return text

    def to_frame(self) -> pd.DataFrame:
        """One row per run: run_id, flow, status, action, events, values, bytes, ancestor."""
        import pandas as pd

        columns = ["run_id", "flow", "status", "action", "events", "values", "bytes", "ancestor"]
        rows = [[getattr(r, c) for c in columns] for r in self.runs]
        return pd.DataFrame(rows, columns=columns)


def copy_runs(
    source: StoreLike,
    target: StoreLike,
    run_ids: str | Iterable[str] | None = None,
    *,
    include_ancestors: bool = True,
) -> CopyReport:
    """Copy runs (default: every run) from ``source`` to ``target``; return a report.

    ``source`` and ``target`` are anything ``store=`` accepts, of any two backends. Each
    run keeps its id, parameters, fork point and whole event log; its flow definition and
    every value it refers to (its outputs, outputs it reused from other runs, a fork's
    plan) are copied too, each value once. With ``include_ancestors`` (the default), the
    runs a copied run forks or reuses outputs from are copied as well, parents first, so
    ``flow.lineage`` and ``run.fork`` work in the target.

    Copying again writes nothing new: runs the target already holds are skipped. Raises
    UnknownRunError for a run id the source does not have, and TransferError, before
    writing anything, for a run still running, a run the target holds with other content,
    or a value missing from the source or that does not hash to its name.
    """
    if not isinstance(include_ancestors, bool):
        raise ParameterError(f"include_ancestors must be True or False, not {include_ancestors!r}")
    src, dst = open_store(source), open_store(target)
    if src is dst or (src.uri and src.uri == dst.uri and src.uri != ":memory:"):
        raise TransferError(
            f"the source and the target are the same store ({src.uri or src}): copy runs "
            "between two different stores."
        )
    if run_ids is None:
        requested = [r.run_id for r in reversed(src.list_runs())]  # oldest first
    else:
        requested = list(dict.fromkeys(_run_ids(run_ids)))
    plans, missing = _plan(src, dst, requested, include_ancestors)
    copied: set[str] = set()  # value hashes written by this copy
    report = [_copy_run(src, dst, plans[run_id], copied) for run_id in _parents_first(plans)]
    return CopyReport(src.uri or repr(src), dst.uri or repr(dst), tuple(report), missing)


# -- planning: every check before any write ---------------------------------------------------


@dataclass
class _Plan:
    """One run to copy, as read from the source, and what the target holds of it."""

    record: RunRecord
    version: int  # copy the log up to here (the version the checks saw)
    status: RunStatus
    refs: dict[str, ValueRef]  # the values it refers to, by hash
    parents: list[str]  # runs it forks or reuses outputs from
    have: int | None  # the target's version of it, None if the target lacks it
    requested: bool
    mark: UntrustedRun | None = None  # how the target marks it untrusted, if it must


def _plan(
    src: Store, dst: Store, requested: Sequence[str], include_ancestors: bool
) -> tuple[dict[str, _Plan], tuple[str, ...]]:
    """Read every run to copy and check it; raise before anything is written."""
    wanted = set(requested)
    plans: dict[str, _Plan] = {}
    missing: list[str] = []
    problems: list[str] = []
    verified: set[str] = set()  # hashes read and found to hash to their name
    queue = deque(requested)
    while queue:
        run_id = queue.popleft()
        if run_id in plans or run_id in missing:
            continue
        try:
            record = src.get_run(run_id)
        except UnknownRunError:
            if run_id in wanted:
                raise
            missing.append(run_id)  # an ancestor that gc removed
            continue
        events = src.read_events(run_id)
        state = fold(record, events)
        plan = _Plan(
            record=record,
            version=state.run.version,
            status=state.run.status,
            refs=_refs(events),
            parents=_parents(record, events),
            have=None,
            requested=run_id in wanted,
        )
        plans[run_id] = plan
        if dst.tenant is not None and record.tenant not in (None, dst.tenant):
            problems.append(
                f"run {run_id} belongs to tenant {record.tenant!r}, and the target is opened "
                f"for tenant {dst.tenant!r} (runs keep their tenant when copied)"
            )
            continue
        if plan.status is RunStatus.RUNNING:
            problems.append(_running(run_id, src, plan.requested))
            continue
        gone = sorted(h for h in plan.refs if not src.has_blob(h))
        if gone:
            problems.append(
                f"run {run_id} refers to value(s) {', '.join(gone)}, missing from {src} "
                "(`nbflow check` tells more)"
            )
        for hash, ref in plan.refs.items():
            if hash in gone or hash in verified or dst.has_blob(hash):
                continue
            problem = _read_and_verify(src, ref)[1]
            if problem:
                problems.append(f"run {run_id} refers to {problem} in {src}")
            else:
                verified.add(hash)
        conflict = _compare(dst, plan, events)
        if conflict:
            problems.append(conflict)
        if include_ancestors:
            queue.extend(p for p in plan.parents if p not in plans)
    _plan_marks(src, dst, plans, problems)
    if problems:
        raise TransferError("cannot copy: " + "; ".join(problems) + ". Nothing was copied.")
    return plans, tuple(missing)


def _plan_marks(src: Store, dst: Store, plans: dict[str, _Plan], problems: list[str]) -> None:
    """Set how the target marks each run: as the source does, or (a source opened with
    ``trust=False``) as copied from it; a target that cannot mark runs is a problem."""
    marks = src.untrusted_runs(list(plans))
    for run_id, plan in plans.items():
        plan.mark = marks.get(run_id)
        if plan.mark is None and not src.trust:
            source = f"copied from {src.uri or repr(src)}, opened with trust=False"
            plan.mark = UntrustedRun(run_id, source, utcnow())
    needed = [r for r, p in plans.items() if p.mark is not None and p.have != p.version]
    if needed and not keeps_marks(dst):
        problems.append(
            f"{dst} cannot mark runs untrusted (its backend lacks mark_untrusted), and "
            f"run(s) {', '.join(needed)} must be"
        )


def _read_and_verify(src: Store, ref: ValueRef) -> tuple[EncodedValue | None, str | None]:
    """The stored form of ``ref`` in ``src`` and, when it cannot be copied, why not."""
    try:
        encoded = src.read_encoded(ref)
    except CorruptStoreError as exc:  # found damaged as it was read (a frame's digest)
        return None, f"the value {ref.hash}, which cannot be read ({exc})"
    return encoded, _verify(encoded, ref)


def _verify(encoded: EncodedValue, ref: ValueRef) -> str | None:
    """None if the stored value hashes to its name, with the codec the events say;
    else what is wrong with it. Hashed from its stored form: never unpickled."""
    from nbflow.values.verify import stored_hash

    stored = encoded.ref
    if stored.codec is not ref.codec:
        return (
            f"the value {ref.hash} as {ref.codec.value}, but it is stored as "
            f"{stored.codec.value} (`nbflow check` tells more)"
        )
    try:
        actual = stored_hash(
            stored.codec, table=encoded.table, data=encoded.data, meta=unmarked(encoded.meta)
        )
    except Exception as exc:  # a damaged value may fail in any reader
        return f"the value {ref.hash}, which cannot be read ({type(exc).__name__}: {exc})"
    if actual != ref.hash:
        return (
            f"the value {ref.hash}, whose content hashes to {actual}: it is damaged or was "
            "changed (`nbflow check` tells more)"
        )
    return None


def _running(run_id: str, src: Store, requested: bool) -> str:
    text = f"run {run_id} is still running in {src}: copy it once it has finished (or cancel it)"
    if not requested:
        text += (
            "; it is an ancestor of a run to copy (include_ancestors=False, or "
            "--no-ancestors, leaves it out)"
        )
    return text


def _refs(events: Iterable[Event]) -> dict[str, ValueRef]:
    """The stored values the events refer to, by hash."""
    refs: dict[str, ValueRef] = {}
    for event in events:
        for ref in refs_in_payload(event.type, event.payload):
            refs.setdefault(ref["hash"], ValueRef.from_json(ref))
    return refs


def _parents(record: RunRecord, events: Iterable[Event]) -> list[str]:
    """The runs ``record`` forks (its parent first) or took outputs from, in order."""
    found: list[Any] = [record.parent_run_id]
    for event in events:
        payload = event.payload
        found += [payload.get(key) for key in ("parent_run_id", "reused_from", "source_run_id")]
        if event.type is EventType.RUN_FORKED:
            found += [row.get("source_run_id") for row in (payload.get("reused") or {}).values()]
    ids = [r for r in found if isinstance(r, str) and r and r != record.run_id]
    return list(dict.fromkeys(ids))


def _compare(dst: Store, plan: _Plan, events: Sequence[Event]) -> str | None:
    """Set ``plan.have`` to the target's version of the run; a conflict's wording, if
    the target holds the run with other content."""
    run_id = plan.record.run_id
    try:
        held = dst.get_run(run_id)
    except UnknownRunError:
        return None
    where = f"run {run_id} already exists in {dst} with other content"
    if not _same_creation(held, plan.record):
        return f"{where} (another flow, parameters, creation time or fork point)"
    theirs = dst.read_events(run_id)
    if len(theirs) > len(events):
        return f"{where} (it has {len(theirs)} events, the source {len(events)})"
    for mine, other in zip(events, theirs, strict=False):
        if not _same_event(mine, other):
            return f"{where} (its event {other.seq} differs)"
    plan.have = len(theirs)
    return None


def _same_creation(a: RunRecord, b: RunRecord) -> bool:
    """Whether two records describe the same run as created (status and times aside)."""
    return (
        (a.flow, a.flow_fingerprint, a.created_at) == (b.flow, b.flow_fingerprint, b.created_at)
        and (a.parent_run_id, a.fork_from_step, a.fork_from_version, a.thread_id)
        == (b.parent_run_id, b.fork_from_step, b.fork_from_version, b.thread_id)
        and _canonical(a.params) == _canonical(b.params)
        and _canonical(a.steps) == _canonical(b.steps)
    )


def _same_event(a: Event, b: Event) -> bool:
    return _event_key(a) == _event_key(b)


def _event_key(e: Event) -> tuple[Any, ...]:
    return (e.seq, e.ts, e.type, e.step, e.attempt, _canonical(e.payload))


def _canonical(value: Any) -> str:
    """JSON text with sorted keys: a backend may hand back tuples as lists, or keys in
    another order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _parents_first(plans: dict[str, _Plan]) -> Iterator[str]:
    """Every planned run, oldest first except that a run's parents (and the runs it
    took outputs from) come before it. Concurrent runs may take outputs from each
    other, so the graph can have cycles: they are broken where found."""
    done: set[str] = set()
    by_age = sorted(plans, key=lambda r: (plans[r].record.created_at, r))
    for root in by_age:
        if root in done:
            continue
        done.add(root)
        stack = [(root, iter(plans[root].parents))]
        while stack:
            run_id, parents = stack[-1]
            parent = next((p for p in parents if p in plans and p not in done), None)
            if parent is None:
                stack.pop()
                yield run_id
            else:
                done.add(parent)
                stack.append((parent, iter(plans[parent].parents)))


# -- writing ----------------------------------------------------------------------------------


def _copy_run(src: Store, dst: Store, plan: _Plan, copied: set[str]) -> RunCopy:
    """Write one planned run: flow definition, values, then its row and log."""
    record = plan.record
    done = RunCopy(
        record.run_id,
        record.flow,
        plan.status.value,
        SKIPPED,
        ancestor=not plan.requested,
    )
    if plan.have == plan.version:
        return done
    flow = src.get_flow(record.flow, record.flow_fingerprint)
    if flow is not None:
        dst.put_flow(flow)
    values = size = 0
    for hash, ref in plan.refs.items():
        if hash in copied or dst.has_blob(hash):
            continue
        encoded, problem = _read_and_verify(src, ref)
        if problem or encoded is None:  # changed in the source since the plan read it
            raise TransferError(f"cannot copy run {record.run_id}: {problem} in {src}")
        if encoded.ref.codec is Codec.PICKLE and not src.trust and origin(encoded.meta) is None:
            # Copied out of a store nobody vouched for: the target must not trust it either.
            where = {"copied_from": src.uri or repr(src), "run_id": record.run_id}
            encoded = encoded.with_meta(marked(encoded.meta, {**where, "at": utcnow().isoformat()}))
        dst.put_value(encoded)
        copied.add(hash)
        values += 1
        size += encoded.ref.size
    # The log only up to the version checked: a run resumed since then is copied as it
    # stood, and the rest comes with the next copy.
    events = src.read_events(record.run_id, upto=plan.version)[plan.have or 0 :]
    new = [NewEvent(e.type, e.step, e.attempt, e.payload, e.ts) for e in events]
    if plan.mark is not None:  # before its log: not for an instant is it a cache hit
        dst.mark_untrusted([plan.mark])
    if plan.have is None:
        add_run(dst, record, new)
    elif new:
        dst.append(record.run_id, plan.have, new)
    action = UPDATED if plan.have else COPIED
    return RunCopy(
        record.run_id,
        record.flow,
        plan.status.value,
        action,
        events=len(new),
        values=values,
        bytes=size,
        ancestor=not plan.requested,
    )


def _run_ids(run_ids: object) -> list[str]:
    """One run id or several, as a list; ParameterError for anything else."""
    from nbflow import arguments

    if isinstance(run_ids, str):
        return [run_ids]
    if isinstance(run_ids, bytes) or not isinstance(run_ids, Iterable):
        raise ParameterError(
            f"run_ids must be a run id or a list of them, not {type(run_ids).__name__} "
            f"{run_ids!r:.60}"
        )
    return [arguments.run_id(r) for r in run_ids]
