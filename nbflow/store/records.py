"""Typed, frozen records exchanged between the engine, the stores and the frames."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nbflow.values.refs import Codec, ValueRef


def utcnow() -> dt.datetime:
    """The current time, tz-aware UTC, at the microsecond precision the stores keep."""
    return dt.datetime.now(dt.UTC)


class RunStatus(StrEnum):
    """Where a run stands."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    WAITING = "waiting"  # at a human gate: no process advances it until a person decides

    @property
    def finished(self) -> bool:
        """True for statuses a run only leaves by being resumed (or never)."""
        return self in _FINISHED_RUN

    @property
    def at_rest(self) -> bool:
        """True when no process advances the run: it has finished, or waits at a gate."""
        return self in _FINISHED_RUN or self is RunStatus.WAITING


_FINISHED_RUN = {
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.INTERRUPTED,
}


class StepStatus(StrEnum):
    """Where one attempt of a step stands."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"  # handed to an executor that has not started it yet
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CACHED = "cached"
    SKIPPED = "skipped"

    @property
    def has_output(self) -> bool:
        """True when an attempt in this status holds a usable output."""
        return self in (StepStatus.COMPLETED, StepStatus.CACHED)

    @property
    def in_progress(self) -> bool:
        """True for an attempt that has not ended (queued or running): stores keep it in
        the events, not yet as a ``step_executions`` row."""
        return self is StepStatus.RUNNING or self is StepStatus.QUEUED


class EventType(StrEnum):
    """The kinds of events in a run's append-only log."""

    RUN_STARTED = "run_started"
    RUN_FORKED = "run_forked"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_INTERRUPTED = "run_interrupted"
    STEP_SCHEDULED = "step_scheduled"
    STEP_QUEUED = "step_queued"
    STEP_STARTED = "step_started"
    STEP_INPUT_RECORDED = "step_input_recorded"
    STEP_OUTPUT_RECORDED = "step_output_recorded"
    STEP_COMPLETED = "step_completed"
    STEP_CACHED = "step_cached"
    STEP_SKIPPED = "step_skipped"
    STEP_FAILED = "step_failed"
    STEP_RETRIED = "step_retried"
    STEP_WARNING = "step_warning"  # something the user must know (an untracked global)
    GATE_OPENED = "gate_opened"  # the run waits for a person's decision on a gate
    GATE_APPROVED = "gate_approved"
    GATE_REJECTED = "gate_rejected"

    @property
    def is_run_event(self) -> bool:
        """True for events about the run as a whole rather than one step."""
        return self._value_.startswith("run_")  # _value_: no descriptor, on hot paths

    @property
    def is_gate_event(self) -> bool:
        """True for a gate's opening and the decisions on it."""
        return self._value_.startswith("gate_")


@dataclass(frozen=True)
class BlobRecord:
    """A content-addressed value stored out of line."""

    hash: str
    codec: Codec
    size: int
    created_at: dt.datetime
    table_name: str | None = None


@dataclass(frozen=True)
class StepDefinition:
    """The stored, code-free description of one step of a flow definition."""

    name: str
    fingerprint: str
    dependencies: tuple[str, ...]
    params: Mapping[str, Any]  # name -> default
    param_types: Mapping[str, str]
    source: str
    options: Mapping[str, Any]
    # What the fingerprint saw besides code (empty in definitions from before they were
    # recorded): the fingerprint of the code and constants alone, each data global read
    # -> its content hash, each installed distribution used -> its version.
    code_fingerprint: str | None = None
    globals: Mapping[str, str] = field(default_factory=dict)
    packages: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The definition as a JSON-able dict (how stores and exports keep it)."""
        data = {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "dependencies": list(self.dependencies),
            "params": dict(self.params),
            "param_types": dict(self.param_types),
            "source": self.source,
            "options": dict(self.options),
        }
        if self.code_fingerprint is not None:
            data["code_fingerprint"] = self.code_fingerprint
        if self.globals:
            data["globals"] = dict(self.globals)
        if self.packages:
            data["packages"] = dict(self.packages)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepDefinition:
        """Rebuild a definition from :meth:`to_json` output."""
        return cls(
            name=data["name"],
            fingerprint=data["fingerprint"],
            dependencies=tuple(data["dependencies"]),
            params=data["params"],
            param_types=data["param_types"],
            source=data["source"],
            options=data["options"],
            code_fingerprint=data.get("code_fingerprint"),
            globals=data.get("globals") or {},
            packages=data.get("packages") or {},
        )


@dataclass(frozen=True)
class FlowRecord:
    """An immutable version of a flow's definition, keyed by name + fingerprint."""

    name: str
    fingerprint: str
    steps: tuple[StepDefinition, ...]
    created_at: dt.datetime = field(default_factory=utcnow)

    def step(self, name: str) -> StepDefinition | None:
        """The step called ``name``, or None."""
        return next((s for s in self.steps if s.name == name), None)


@dataclass(frozen=True)
class RunRecord:
    """A run as the store's ``runs`` view holds it."""

    run_id: str
    flow: str
    flow_fingerprint: str
    status: RunStatus
    version: int
    params: Mapping[str, Any]
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: str | None = None
    parent_run_id: str | None = None
    fork_from_step: str | None = None
    fork_from_version: int | None = None
    thread_id: str | None = None
    steps: tuple[str, ...] = ()  # the steps this run covers, in topological order
    tenant: str | None = None  # who the run belongs to (None: everyone may read it)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Lease:
    """Who is advancing a running run: a process (``pid`` on ``host``), through one store
    object (``token``), until ``expires_at`` unless it renews the lease.

    On the same host, a lease is alive while its process is (``proc_start`` tells a
    reused pid from the original one); from another host, until it expires.
    """

    run_id: str
    token: str
    pid: int
    host: str
    acquired_at: dt.datetime
    expires_at: dt.datetime
    proc_start: int | None = None

    @property
    def owner(self) -> str:
        """``pid N on HOST``: how messages name the owner."""
        return f"pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class NewEvent:
    """An event as the engine hands it to a store, before it has a ``seq``."""

    type: EventType
    step: str | None = None
    attempt: int | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    ts: dt.datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Event:
    """One entry of a run's append-only event log; ``seq`` is gap-free from 1 per run."""

    run_id: str
    seq: int
    ts: dt.datetime
    type: EventType
    step: str | None
    attempt: int | None
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class FilesRead:
    """The files one execution of a step depended on, each with its content hash (None:
    missing): those it declared (``inputs=``, part of ``key``) and those it opened
    through Python while it ran (absolute paths).

    An execution that read files is recorded under a cache key of its own, made from
    ``key`` and ``read`` (``nbflow.engine.files.reads_key``): a later lookup under
    ``key`` hashes those files again and finds it only if they still match.
    """

    key: str  # the cache key the step was looked up under
    read: Mapping[str, str | None] = field(default_factory=dict)
    declared: Mapping[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """As a JSON-able dict (event payloads, the ``files`` column)."""
        return {"key": self.key, "read": dict(self.read), "declared": dict(self.declared)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> FilesRead | None:
        """Rebuild from :meth:`to_json` output (None stays None)."""
        if not data:
            return None
        return cls(data["key"], dict(data.get("read") or {}), dict(data.get("declared") or {}))


@dataclass(frozen=True)
class StepExecution:
    """One attempt of one step in one run (attempt 0: a cached or skipped step)."""

    run_id: str
    step: str
    attempt: int
    status: StepStatus
    cache_key: str | None = None
    fingerprint: str | None = None  # the step's code fingerprint when it ran
    output: ValueRef | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)  # input name -> content hash
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration_ms: float | None = None
    error: str | None = None
    traceback: str | None = None
    source_run_id: str | None = None  # where a cached or reused output came from
    seq: int = 0  # seq of the event that last changed this row (orders rows as they happened)
    files: FilesRead | None = None  # the files it declared or read, when there were any
    # The run parameters the step read, as this attempt used them; for a cached or reused
    # step, those the execution it takes its output from used. None: not recorded (a
    # store written by nbflow before they were).
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class CacheHit:
    """A stored output that a step with this cache key reuses instead of running.

    The lean form of a cache candidate (see ``Store.cache_hits``): just what recording a
    ``step_cached`` event needs.
    """

    cache_key: str
    output: ValueRef
    run_id: str  # the run whose execution row holds the output
    source_run_id: str | None = None  # where that row's output was computed, if elsewhere
    files: FilesRead | None = None  # the files that execution declared or read

    @property
    def origin(self) -> str:
        """The run that computed the output."""
        return self.source_run_id or self.run_id

    @classmethod
    def of(cls, row: StepExecution) -> CacheHit:
        """The hit an execution row with an output and a cache key offers."""
        if row.cache_key is None or row.output is None:
            raise ValueError(f"execution {row.run_id}/{row.step} has no cached output to offer")
        return cls(row.cache_key, row.output, row.run_id, row.source_run_id, row.files)


class CacheHits(Mapping[str, CacheHit]):
    """Cache hits by cache key (what ``Store.cache_hits`` returns), and for each lookup
    key whose executions read files, which files (:meth:`reads`)."""

    def __init__(self, hits: Mapping[str, CacheHit] | None = None) -> None:
        self._by_key = dict(hits or {})
        self._reads = reads_index(self._by_key.values())

    def __getitem__(self, key: str) -> CacheHit:
        return self._by_key[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def reads(self, key: str) -> Sequence[tuple[str, ...]]:
        """The sets of files that executions looked up under ``key`` read while they ran
        (each set sorted); empty when none read any."""
        return self._reads.get(key, ())


def reads_index(hits: Iterable[CacheHit]) -> dict[str, list[tuple[str, ...]]]:
    """For :meth:`CacheHits.reads`: lookup key -> the distinct sets of files read."""
    index: dict[str, list[tuple[str, ...]]] = {}
    for hit in hits:
        if hit.files is not None and hit.files.read:
            paths = tuple(sorted(hit.files.read))
            known = index.setdefault(hit.files.key, [])
            if paths not in known:
                known.append(paths)
    return index
