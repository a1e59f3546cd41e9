"""The value half of the integrity check: every value an event refers to is stored whole.

For each hash that a run's events refer to (step outputs, cached outputs, the outputs a
fork reuses), in one pass over the stored blobs: the blob exists, with the codec and size
the events recorded; its bytes have that size; a DataFrame value has its table; and, when
``verify`` is on, its content hashes to its name (:func:`nbflow.values.verify.stored_hash`:
pickles are hashed as bytes, never unpickled; frames from their Arrow tables). Values no
event refers to are not checked: they are unfinished writes of a process that died, or
left by deleted runs, and ``gc`` removes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbflow.store.problems import Problem, ProblemKind, StoredBlob
from nbflow.store.records import Codec, Event, EventType, ValueRef

if TYPE_CHECKING:
    from nbflow.store.core import StoreCore as Store

__all__ = ["check_values", "value_references"]

_SHOWN = 3  # references named in a message before "and N more"


@dataclass(frozen=True)
class _Reference:
    """A step of a run whose output is the value."""

    run_id: str
    step: str
    ref: ValueRef


def value_references(events: Mapping[str, Sequence[Event]]) -> dict[str, list[_Reference]]:
    """The blob values the events refer to, by hash, with who refers to them."""
    found: dict[str, dict[tuple[str, str], _Reference]] = {}
    for run_id in sorted(events):
        for event in events[run_id]:
            for step, ref in _refs_in(event):
                if not ref.is_inline:
                    # A fork names a reused output twice (its plan, then step_cached).
                    by_step = found.setdefault(ref.hash, {})
                    by_step.setdefault((run_id, step), _Reference(run_id, step, ref))
    return {hash: list(refs.values()) for hash, refs in found.items()}


def _refs_in(event: Event) -> Iterator[tuple[str, ValueRef]]:
    payload = event.payload
    if event.type in (EventType.STEP_OUTPUT_RECORDED, EventType.STEP_CACHED) and event.step:
        ref = _ref(payload.get("output"))
        if ref is not None:
            yield event.step, ref
    elif event.type is EventType.RUN_FORKED:
        reused = payload.get("reused")
        for step, row in (reused if isinstance(reused, Mapping) else {}).items():
            ref = _ref(row.get("output") if isinstance(row, Mapping) else None)
            if ref is not None:
                yield step, ref
    elif event.type is EventType.RUN_STARTED and isinstance(payload.get("record"), Mapping):
        from nbflow.store.gc import refs_in_payload

        for data in refs_in_payload(event.type, payload):
            ref = _ref(data)
            if ref is not None:
                yield "<record>", ref


def _ref(data: Any) -> ValueRef | None:
    """The ref an event payload holds; None when it holds none (a payload too damaged
    to read is reported by the fold of the run's events)."""
    if not isinstance(data, Mapping):
        return None
    try:
        return ValueRef.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def check_values(
    store: Store,
    events: Mapping[str, Sequence[Event]],
    blobs: Mapping[str, StoredBlob],
    *,
    verify: bool = True,
) -> list[Problem]:
    """The problems of the values ``events`` refer to, given the ``blobs`` the store holds."""
    problems = []
    for hash, refs in sorted(value_references(events).items()):
        problem = _check_blob(store, hash, refs, blobs.get(hash), verify)
        if problem is not None:
            problems.append(problem)
    return problems


def _check_blob(
    store: Store, hash: str, refs: list[_Reference], blob: StoredBlob | None, verify: bool
) -> Problem | None:
    ref = refs[0].ref
    what = f"the value {hash} (a {ref.type_name}, stored as {ref.codec.value})"
    if blob is None:
        return _problem(ProblemKind.BLOB_MISSING, f"{what} is missing", refs)
    if blob.codec != ref.codec:
        return _problem(
            ProblemKind.BLOB_CODEC_MISMATCH,
            f"{what} is stored as {str(blob.codec)!r}, not as its events say",
            refs,
        )
    sizes = sorted({r.ref.size for r in refs} - {blob.size})
    if sizes:
        return _problem(
            ProblemKind.BLOB_SIZE_MISMATCH,
            f"{what} has size {blob.size} in the blobs table, but {sizes[0]} in its events",
            refs,
        )
    if ref.codec is Codec.ARROW:
        if not blob.has_table:
            return _problem(ProblemKind.VALUE_TABLE_MISSING, f"{what} has no table", refs)
    elif blob.data_size is None:
        return _problem(ProblemKind.BLOB_UNREADABLE, f"{what} has no stored bytes", refs)
    elif blob.data_size != blob.size:
        return _problem(
            ProblemKind.BLOB_SIZE_MISMATCH,
            f"{what} holds {blob.data_size} bytes where {blob.size} were written",
            refs,
        )
    if not verify:
        return None
    from nbflow.values.verify import stored_hash

    try:
        table, data = store._blob_content(blob)
        actual = stored_hash(ref.codec, table=table, data=data, meta=blob.meta)
    except Exception as exc:  # damaged content fails in any of the readers' own ways
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        return _problem(ProblemKind.BLOB_UNREADABLE, f"{what} cannot be read ({reason})", refs)
    if actual != hash:
        return _problem(
            ProblemKind.BLOB_HASH_MISMATCH,
            f"{what} is damaged: its content hashes to {actual}",
            refs,
        )
    return None


def _problem(kind: ProblemKind, text: str, refs: list[_Reference]) -> Problem:
    """A value problem, naming the outputs that are lost and how to compute them again."""
    first = refs[0]
    named = [f"step {r.step!r} of run {r.run_id}" for r in refs[:_SHOWN]]
    if len(refs) > _SHOWN:
        named[-1] += f" and {len(refs) - _SHOWN} more"
    steps = sorted({r.step for r in refs})
    return Problem(
        kind,
        f"{text}. It is the output of {', '.join(named)}, which cannot be loaded and "
        f"cannot be repaired; run the flow again with force={steps!r} to compute it again.",
        run_id=first.run_id,
        step=first.step,
        hash=first.ref.hash,
    )
