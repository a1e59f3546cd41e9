"""The JSON of an export folder: strict JSON, and the records it holds.

Every file nbflow writes into an export is strict JSON (RFC 8259), so any reader takes
it. JSON has no NaN or infinities, which run parameters may hold: they are written in a
tagged form, ``{"$nbflow:float": "nan" | "inf" | "-inf"}``, that :func:`loads` turns back
into floats. A dict that happens to look like a tag is wrapped in
``{"$nbflow:dict": ...}``, so every value comes back as it was.

Reading is strict about shapes: a record that is not what nbflow writes is refused with a
:class:`~nbflow.errors.TransferError` naming the file and the field, never a raw
``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbflow.errors import TransferError
from nbflow.store.records import (
    Event,
    EventType,
    FlowRecord,
    NewEvent,
    RunRecord,
    RunStatus,
    StepDefinition,
)

__all__ = [
    "check_run_id",
    "dumps",
    "event_from_json",
    "event_to_json",
    "flow_from_json",
    "flow_to_json",
    "loads",
    "read_json",
    "run_from_json",
    "run_to_json",
]

FLOAT_TAG = "$nbflow:float"
DICT_TAG = "$nbflow:dict"
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

#: What a run id may be: what nbflow makes (``20261123-101502-9f3ac1d2``) and any other
#: short name of letters, digits and ``. _ : -``; no spaces, slashes or control characters.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


# -- strict JSON ------------------------------------------------------------------------------


def _tagged(value: Any) -> Any:
    """``value`` with non-finite floats (and tag-like dicts) in their tagged form."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {FLOAT_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, Mapping):
        out = {k: _tagged(v) for k, v in value.items()}
        return (
            {DICT_TAG: out} if len(out) == 1 and next(iter(out)) in (FLOAT_TAG, DICT_TAG) else out
        )
    if isinstance(value, list | tuple):
        return [_tagged(v) for v in value]
    return value


def _untagged(value: Any) -> Any:
    """The value :func:`_tagged` tagged (top-down: a wrapped dict is taken as it is)."""
    if isinstance(value, dict):
        if len(value) == 1:
            if FLOAT_TAG in value and value[FLOAT_TAG] in _FLOATS:
                return _FLOATS[value[FLOAT_TAG]]
            if DICT_TAG in value and isinstance(value[DICT_TAG], dict):
                return {k: _untagged(v) for k, v in value[DICT_TAG].items()}
        return {k: _untagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untagged(v) for v in value]
    return value


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Strict, ASCII JSON text of ``value`` (non-finite floats tagged); other objects as
    str."""
    separators = (",", ":") if indent is None else None
    return json.dumps(
        _tagged(value),
        indent=indent,
        separators=separators,
        ensure_ascii=True,  # (a lone surrogate in an error text is written as an escape)
        allow_nan=False,
        default=str,
    )


def loads(text: str) -> Any:
    """The value :func:`dumps` wrote (tagged floats back to floats). Bare ``NaN`` and
    ``Infinity``, which exports of format version 1 may hold, are read as floats."""
    return _untagged(json.loads(text))


def read_json(path: Path, folder: Path) -> Any:
    """The JSON document at ``path``, a file of the export ``folder``."""
    try:
        return loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TransferError(f"cannot read {path.name} of {folder}: {exc}") from exc


# -- records -----------------------------------------------------------------------------------


def check_run_id(value: Any, what: str = "run id") -> str:
    """``value`` if it is a valid run id, else TransferError saying what a run id may be."""
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        raise TransferError(
            f"{what} {value!r} is not a valid run id (1 to 128 letters, digits and . _ : -, "
            "starting with a letter or digit)"
        )
    return value


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TransferError(f"{what} is not an ISO 8601 time: {value!r}")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise TransferError(f"{what} is not an ISO 8601 time: {value!r}") from None


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``data[key]``, which must be of ``kind``."""
    if key not in data:
        raise TransferError(f"{where} has no {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise TransferError(f"{where}: {key!r} is {value!r}, not what nbflow writes there")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _optional(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    return None if data.get(key) is None else _field(data, key, kind, where)


def run_to_json(run: RunRecord) -> dict[str, Any]:
    """The run record as JSON (``run.json``'s ``run``)."""
    return {
        "run_id": run.run_id,
        "flow": run.flow,
        "flow_fingerprint": run.flow_fingerprint,
        "status": run.status.value,
        "version": run.version,
        "params": dict(run.params),
        "created_at": _time(run.created_at),
        "started_at": _time(run.started_at),
        "finished_at": _time(run.finished_at),
        "error": run.error,
        "parent_run_id": run.parent_run_id,
        "fork_from_step": run.fork_from_step,
        "fork_from_version": run.fork_from_version,
        "thread_id": run.thread_id,
        "steps": list(run.steps),
        "tenant": run.tenant,
    }


def run_from_json(data: Any) -> RunRecord:
    """The run as it was created: pending at version 0 (its events bring it up to date).

    Its id, its parent's and its thread's are checked like any run id."""
    where = "run.json's run"
    if not isinstance(data, Mapping):
        raise TransferError(f"{where} is not a JSON object")
    run_id = check_run_id(data.get("run_id"), "the exported run's id")
    parent, thread = data.get("parent_run_id"), data.get("thread_id")
    for ident, what in ((parent, "its parent run id"), (thread, "its thread id")):
        if ident is not None:
            check_run_id(ident, what)
    steps = _field(data, "steps", list, where) if "steps" in data else []
    if not all(isinstance(s, str) for s in steps):
        raise TransferError(f"{where}: 'steps' must be a list of step names")
    created = _parse_time(_field(data, "created_at", str, where), f"{where}'s created_at")
    assert created is not None
    tenant = data.get("tenant")
    if tenant is not None:
        from nbflow.errors import InvalidTenantError
        from nbflow.store.tenants import check_tenant

        try:
            check_tenant(tenant)
        except InvalidTenantError as exc:
            raise TransferError(f"{where}'s tenant is not a tenant name: {exc}") from None
    return RunRecord(
        run_id=run_id,
        flow=_field(data, "flow", str, where),
        flow_fingerprint=_field(data, "flow_fingerprint", str, where),
        status=RunStatus.PENDING,
        version=0,
        params=_field(data, "params", dict, where),
        created_at=created,
        parent_run_id=parent,
        fork_from_step=_optional(data, "fork_from_step", str, where),
        fork_from_version=_optional(data, "fork_from_version", int, where),
        thread_id=thread,
        steps=tuple(steps),
        tenant=tenant,
    )


def flow_to_json(flow: FlowRecord) -> dict[str, Any]:
    """A flow definition as JSON (``run.json``'s ``flow``)."""
    return {
        "name": flow.name,
        "fingerprint": flow.fingerprint,
        "created_at": _time(flow.created_at),
        "steps": [s.to_json() for s in flow.steps],
    }


def flow_from_json(data: Any) -> FlowRecord:
    """The flow definition :func:`flow_to_json` wrote."""
    where = "run.json's flow"
    if not isinstance(data, Mapping):
        raise TransferError(f"{where} is not a JSON object")
    try:
        steps = tuple(StepDefinition.from_json(s) for s in _field(data, "steps", list, where))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TransferError(f"{where} has a step nbflow cannot read ({exc!r})") from None
    created = _parse_time(data.get("created_at"), f"{where}'s created_at")
    return FlowRecord(
        _field(data, "name", str, where),
        _field(data, "fingerprint", str, where),
        steps,
        created or dt.datetime.now(dt.UTC),
    )


def event_to_json(event: Event) -> dict[str, Any]:
    """One line of ``events.jsonl``."""
    return {
        "seq": event.seq,
        "ts": _time(event.ts),
        "type": event.type.value,
        "step": event.step,
        "attempt": event.attempt,
        "payload": dict(event.payload),
    }


def event_from_json(data: Any, seq: int) -> NewEvent:
    """The event on line ``seq`` of ``events.jsonl``; its fields must have nbflow's types."""
    where = "the event"
    if not isinstance(data, Mapping):
        raise TransferError("it is not a JSON object")
    if data.get("seq") != seq:
        raise TransferError(f"seq {data.get('seq')} where {seq} was expected")
    try:
        kind = EventType(_field(data, "type", str, where))
    except ValueError:
        raise TransferError(f"unknown event type {data['type']!r}") from None
    ts = _parse_time(_field(data, "ts", str, where), "its ts")
    assert ts is not None
    payload = data.get("payload") or {}
    if not isinstance(payload, dict):
        raise TransferError(f"its payload is {type(payload).__name__}, not a JSON object")
    return NewEvent(
        kind,
        _optional(data, "step", str, where),
        _optional(data, "attempt", int, where),
        payload,
        ts,
    )
