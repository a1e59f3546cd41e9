"""A run's provenance, as its events and values tell it: :func:`read_provenance`.

The record is written when a run starts (``run_started``'s ``record``, see
``nbflow.engine.provenance``): its code and environment are stored values, the files
each step read are in its execution rows. A run recorded before records existed has no
``record``: its provenance says what is missing, and keeps what the flow definition has
(each step's normalized source).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbflow.store.records import EventType, StepExecution
from nbflow.values.refs import ValueRef

if TYPE_CHECKING:
    from nbflow.store.base import Store

__all__ = ["Environment", "Provenance", "StepProvenance", "read_provenance"]

#: What a run recorded before provenance existed lacks.
MISSING_BEFORE_RECORDS = (
    "the source of the helpers, classes and constants its steps used",
    "the values of the data globals its steps read",
    "the Python version, platform and package versions it ran with",
)


@dataclass(frozen=True)
class Environment:
    """Where a run ran: ``python`` version, ``platform`` text, and ``packages``
    (distribution -> version) for every installed distribution its code used.

    ``hash`` is the content hash of the stored environment value: runs with the same
    environment share it. Empty for a run recorded before environments were."""

    python: str = ""
    implementation: str = ""
    platform: str = ""
    system: str = ""
    machine: str = ""
    packages: Mapping[str, str] = field(default_factory=dict)
    hash: str = ""

    def requirements(self) -> str:
        """The packages as ``requirements.txt`` lines (``name==version``), nbflow included."""
        lines = [f"# recorded with Python {self.python} on {self.platform}"] if self.python else []
        lines += [f"{name}=={version}" for name, version in sorted(self.packages.items())]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class StepProvenance:
    """What one step of a run was: its code as recorded and what it read.

    ``source`` is the step as a normalized ``def`` (what a reproduction executes) and
    ``text`` its source as written; ``entries`` maps each global it reads to how it is
    defined again (``kind``: import, from, function, class, constant, data, alias) and
    ``modules`` each module of the user's code it uses to that module's source;
    ``data`` each data global to its stored value's ref; ``files`` each file it read to
    its content hash (None: it was missing); ``problems`` what could not be recorded and
    why; ``untracked`` the globals nbflow could not hash (the step is untracked)."""

    name: str
    source: str
    text: str | None = None
    defines: str = ""
    dependencies: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    modules: Mapping[str, str] = field(default_factory=dict)
    packages: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    files: Mapping[str, str | None] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)
    untracked: Mapping[str, str] = field(default_factory=dict)
    rtol: float | None = None
    atol: float | None = None
    status: str | None = None
    output_hash: str | None = None
    recorded: bool = True  # False: only the definition's source is known (an older run)


@dataclass(frozen=True)
class Provenance:
    """The complete record of a run (``run.provenance()``): parameters, working folder,
    environment and each step's :class:`StepProvenance`.

    ``missing`` lists what the record lacks (a run recorded before nbflow kept records,
    or a record that could not be made, with ``error``); empty for a complete one."""

    run_id: str
    flow: str
    params: Mapping[str, Any]
    cwd: str | None
    environment: Environment
    steps: Mapping[str, StepProvenance]
    missing: tuple[str, ...] = ()
    error: str | None = None
    scheme: int | None = None

    @property
    def complete(self) -> bool:
        """Whether the run has a full record (code and environment)."""
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        """The provenance as JSON-able dicts and lists."""
        return dataclasses.asdict(self)


def _value(store: Store, ref_json: Any, run_id: str) -> Any:
    if not isinstance(ref_json, Mapping):
        return None
    return store.load_output(ValueRef.from_json(ref_json), step="<record>", run_id=run_id)


def read_provenance(store: Store, run_id: str) -> Provenance:
    """The provenance of run ``run_id`` of ``store`` (UnknownRunError if it has none).

    With a resumed run, each step's record is the one of the start it ran after.
    """
    run = store.get_run(run_id)
    records: dict[str, dict[str, Any]] = {}  # step -> the record of the start it ran after
    current: dict[str, Any] | None = None
    latest: dict[str, Any] | None = None
    for event in store.read_events(run_id):
        if event.type is EventType.RUN_STARTED and isinstance(event.payload.get("record"), dict):
            current = latest = event.payload["record"]
        elif event.type in _DONE and event.step and current is not None:
            records[event.step] = current
    rows = _latest_rows(store.executions(run_id))
    definition = store.get_flow(run.flow, run.flow_fingerprint)
    by_name = {s.name: s for s in definition.steps} if definition is not None else {}
    code_cache: dict[str, Any] = {}

    def code_of(record: Mapping[str, Any] | None) -> Mapping[str, Any]:
        if record is None or "code" not in record:
            return {}
        key = record["code"]["hash"]
        if key not in code_cache:
            code_cache[key] = (_value(store, record["code"], run_id) or {}).get("steps", {})
        return code_cache[key]

    steps = {}
    for name in run.steps:
        record = records.get(name, latest)
        code = code_of(record).get(name)
        steps[name] = _step(name, code, record, by_name.get(name), rows.get(name))
    missing: tuple[str, ...] = ()
    error = latest.get("error") if latest is not None else None
    if latest is None or "code" not in latest:
        missing = MISSING_BEFORE_RECORDS
    env = _environment(store, latest, run_id)
    return Provenance(
        run_id=run.run_id,
        flow=run.flow,
        params=dict(run.params),
        cwd=latest.get("cwd") if latest is not None else None,
        environment=env,
        steps=steps,
        missing=missing,
        error=error,
        scheme=latest.get("scheme") if latest is not None else None,
    )


_DONE = (EventType.STEP_COMPLETED, EventType.STEP_CACHED)


def _latest_rows(rows: list[StepExecution]) -> dict[str, StepExecution]:
    latest: dict[str, StepExecution] = {}
    for row in rows:
        known = latest.get(row.step)
        if known is None or (row.attempt, row.seq) >= (known.attempt, known.seq):
            latest[row.step] = row
    return latest


def _environment(store: Store, record: Mapping[str, Any] | None, run_id: str) -> Environment:
    if record is None or "environment" not in record:
        return Environment()
    data = _value(store, record["environment"], run_id) or {}
    return Environment(
        python=data.get("python", ""),
        implementation=data.get("implementation", ""),
        platform=data.get("platform", ""),
        system=data.get("system", ""),
        machine=data.get("machine", ""),
        packages=dict(data.get("packages") or {}),
        hash=record["environment"].get("hash", ""),
    )


def _step(
    name: str,
    code: Mapping[str, Any] | None,
    record: Mapping[str, Any] | None,
    definition: Any,
    row: StepExecution | None,
) -> StepProvenance:
    files: dict[str, str | None] = {}
    if row is not None and row.files is not None:
        files = {**row.files.declared, **row.files.read}
    common: dict[str, Any] = {
        "name": name,
        "dependencies": tuple(definition.dependencies) if definition is not None else (),
        "params": dict(row.params) if row is not None and row.params is not None else {},
        "options": dict(definition.options) if definition is not None else {},
        "files": files,
        "status": row.status.value if row is not None else None,
        "output_hash": row.output.hash if row is not None and row.output is not None else None,
    }
    if code is None:
        source = definition.source if definition is not None else ""
        return StepProvenance(source=source, recorded=False, **common)
    tolerance = code.get("reproduce") or {}
    data = (record or {}).get("data", {}).get(name, {})
    return StepProvenance(
        source=code.get("source", ""),
        text=code.get("text"),
        defines=code.get("defines", name),
        entries=dict(code.get("entries") or {}),
        modules=dict(code.get("modules") or {}),
        packages=dict(code.get("packages") or {}),
        data=dict(data),
        problems=dict(code.get("problems") or {}),
        untracked=dict(code.get("untracked") or {}),
        rtol=tolerance.get("rtol"),
        atol=tolerance.get("atol"),
        **common,
    )
