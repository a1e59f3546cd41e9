"""Export one run to a self-describing folder, and import it into another store.

An export folder holds:

* ``run.json``: the format tag, the run record, its parameters and the flow definition
  (every step's source);
* ``events.jsonl``: the run's event log, one event a line, in order;
* ``values/``: each step output once per content hash: DataFrames as Parquet (the encoded
  Arrow table) with their nbflow ``meta`` as ``<hash>.meta.json``, arrays as ``.npy``,
  JSON values as ``.json``, anything else as ``.pickle`` (named as such);
* ``manifest.json``: content hash -> file, codec, type and meta file.

The folder is written next to its target under a temporary name, then renamed: a
half-written export is never left under the target's name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbflow import arguments
from nbflow.errors import TransferError, UnknownRunError
from nbflow.store.base import Store
from nbflow.store.records import (
    Codec,
    Event,
    EventType,
    FlowRecord,
    NewEvent,
    RunRecord,
    RunStatus,
    StepDefinition,
    ValueRef,
)

__all__ = ["FORMAT", "add_run", "export_run", "import_run"]

#: The tag ``run.json`` carries, telling an nbflow export from any other folder.
FORMAT = "nbflow-run-export"
FORMAT_VERSION = 1

_EXTENSIONS = {
    Codec.JSON: "json",
    Codec.JSON_BLOB: "json",
    Codec.ARROW: "parquet",
    Codec.ARROW_IPC: "parquet",
    Codec.NUMPY: "npy",
    Codec.PICKLE: "pickle",
}


def export_run(store: Store, run_id: str, directory: str | os.PathLike[str]) -> Path:
    """Write run ``run_id`` of ``store`` to the new folder ``directory``; return its path.

    The folder must not exist yet. Every output of every step execution is written once
    per content hash, so the run can be imported into any store with :func:`import_run`.
    """
    arguments.instance(store, Store, "export_run's store", hint="nf.open_store(path) opens one.")
    target = Path(arguments.path(directory, "export_run's directory"))
    if target.exists():
        raise TransferError(f"{target} already exists: export into a new folder.")
    if not target.parent.is_dir():
        raise TransferError(f"cannot export into {target}: {target.parent} is not a folder.")
    record = store.get_run(run_id)  # UnknownRunError names the run
    flow = store.get_flow(record.flow, record.flow_fingerprint)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (temp / "values").mkdir()
        manifest: dict[str, Any] = {}
        for execution in store.executions(run_id):
            ref = execution.output
            if ref is not None and ref.hash not in manifest:
                manifest[ref.hash] = _write_value(store, ref, temp / "values")
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run": _run_to_json(record),
            "params": dict(record.params),
            "flow": None if flow is None else _flow_to_json(flow),
        }
        _write_json(temp / "run.json", header)
        _write_json(temp / "manifest.json", {"values": manifest})
        with open(temp / "events.jsonl", "w", encoding="utf-8") as out:
            for event in store.read_events(run_id):
                out.write(json.dumps(_event_to_json(event), separators=(",", ":")) + "\n")
        os.rename(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def import_run(store: Store, directory: str | os.PathLike[str]) -> str:
    """Load the run exported to ``directory`` into ``store``; return its run id.

    The flow definition, every value (its content hash checked) and the run with its
    whole event log are added; the store's views are rebuilt by folding the events.
    A run id the store already holds is refused, as is a folder that is not an export.
    """
    arguments.instance(store, Store, "import_run's store", hint="nf.open_store(path) opens one.")
    folder = Path(arguments.path(directory, "import_run's directory"))
    header = _read_header(folder)
    run = _run_from_json(header["run"])
    try:
        store.get_run(run.run_id)
    except UnknownRunError:
        pass
    else:
        raise TransferError(
            f"run {run.run_id} already exists in {store.uri or store}: nothing imported."
        )
    manifest = _read_json(folder / "manifest.json", folder).get("values", {})
    events = _read_events(folder / "events.jsonl", run.run_id)
    encoded = [_read_value(folder, hash, entry) for hash, entry in manifest.items()]
    if header.get("flow") is not None:
        store.put_flow(_flow_from_json(header["flow"]))
    for value in encoded:
        store.put_value(value)
    add_run(store, run, events)
    return run.run_id


def add_run(store: Store, run: RunRecord, events: Sequence[NewEvent]) -> None:
    """Create ``run`` in ``store`` and append its whole log in one append (timestamps
    kept), so the store folds it into the same views; if the append fails, the run is
    removed again: no half-added run is left behind."""
    store.create_run(run)
    try:
        if events:
            store.append(run.run_id, 0, events)
    except BaseException:
        store._delete([run.run_id], [])
        raise


# -- values ------------------------------------------------------------------------------


def _write_value(store: Store, ref: ValueRef, folder: Path) -> dict[str, Any]:
    from nbflow.values import encode

    name = f"{ref.hash}.{_EXTENSIONS[ref.codec]}"
    entry: dict[str, Any] = {"file": f"values/{name}", "ref": ref.to_json()}
    path = folder / name
    if ref.codec is Codec.PICKLE:
        # The bytes as stored, never unpickled: exporting runs none of the store's code,
        # so it works on a store opened with trust=False.
        stored = store.read_encoded(ref)
        assert stored.data is not None
        path.write_bytes(stored.data)
        return entry
    value = store.load_value(ref)
    encoded = encode(value, step="export")
    if encoded.ref.hash != ref.hash:
        raise TransferError(
            f"the stored value {ref.hash} (a {ref.type_name}) does not re-encode to the same "
            f"content hash ({encoded.ref.hash}): it cannot be exported exactly."
        )
    if ref.codec in (Codec.ARROW, Codec.ARROW_IPC):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = encoded.table
        if table is None:  # ARROW_IPC: the same Arrow table, read back from its bytes
            assert encoded.data is not None
            table = pa.ipc.open_stream(pa.py_buffer(encoded.data)).read_all()
        pq.write_table(table, path)
    elif ref.codec is Codec.JSON:
        path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    else:
        assert encoded.data is not None
        path.write_bytes(encoded.data)
    if encoded.meta:
        entry["meta"] = f"values/{ref.hash}.meta.json"
        _write_json(folder / f"{ref.hash}.meta.json", encoded.meta)
    return entry


def _read_value(folder: Path, hash: str, entry: Mapping[str, Any]) -> Any:
    from nbflow.values import EncodedValue, decode, encode
    from nbflow.values.hashing import hash_bytes

    try:
        ref = ValueRef.from_json(entry["ref"])
        path = folder / entry["file"]
        meta = _read_json(folder / entry["meta"], folder) if entry.get("meta") else {}
        if ref.codec is Codec.PICKLE:
            # Never unpickle to check: the bytes are what was stored, and their hash says so.
            data = path.read_bytes()
            if hash_bytes("pickle", data) != hash:
                raise TransferError(f"value {hash} in {folder} does not match its content hash.")
            return EncodedValue(ref=ref, data=data, meta=meta)
        if ref.codec in (Codec.ARROW, Codec.ARROW_IPC):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if ref.codec is Codec.ARROW:
                value = decode(ref, table=table, meta=meta)
            else:
                value = decode(ref, data=_ipc_bytes(table), meta=meta)
        elif ref.codec is Codec.JSON:
            value = json.loads(path.read_text(encoding="utf-8"))
        else:
            value = decode(ref, data=path.read_bytes(), meta=meta)
    except TransferError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise TransferError(
            f"cannot read value {hash} from {folder}: {type(exc).__name__}: {exc}"
        ) from exc
    encoded = encode(value, step="import")
    if encoded.ref.hash != hash:
        raise TransferError(f"value {hash} in {folder} does not match its content hash.")
    return encoded


# -- records as JSON -----------------------------------------------------------------------


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _run_to_json(run: RunRecord) -> dict[str, Any]:
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
    }


def _run_from_json(data: Mapping[str, Any]) -> RunRecord:
    """The run as it was created: pending at version 0 (its events bring it up to date)."""
    created = _parse_time(data["created_at"])
    assert created is not None
    return RunRecord(
        run_id=data["run_id"],
        flow=data["flow"],
        flow_fingerprint=data["flow_fingerprint"],
        status=RunStatus.PENDING,
        version=0,
        params=data["params"],
        created_at=created,
        parent_run_id=data.get("parent_run_id"),
        fork_from_step=data.get("fork_from_step"),
        fork_from_version=data.get("fork_from_version"),
        thread_id=data.get("thread_id"),
        steps=tuple(data.get("steps", ())),
    )


def _flow_to_json(flow: FlowRecord) -> dict[str, Any]:
    return {
        "name": flow.name,
        "fingerprint": flow.fingerprint,
        "created_at": _time(flow.created_at),
        "steps": [s.to_json() for s in flow.steps],
    }


def _flow_from_json(data: Mapping[str, Any]) -> FlowRecord:
    steps = tuple(StepDefinition.from_json(s) for s in data["steps"])
    created = _parse_time(data.get("created_at")) or dt.datetime.now(dt.UTC)
    return FlowRecord(data["name"], data["fingerprint"], steps, created)


def _event_to_json(event: Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "ts": _time(event.ts),
        "type": event.type.value,
        "step": event.step,
        "attempt": event.attempt,
        "payload": dict(event.payload),
    }


# -- reading a folder ------------------------------------------------------------------------


def _read_header(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise TransferError(f"{folder} is not a folder: nothing to import.")
    if not (folder / "run.json").is_file():
        raise TransferError(
            f"{folder} is not an nbflow run export (it has no run.json); make one with "
            "`nbflow export RUN DIR`."
        )
    header = _read_json(folder / "run.json", folder)
    if header.get("format") != FORMAT:
        raise TransferError(f"{folder} is not an nbflow run export (run.json has no {FORMAT!r}).")
    if header.get("format_version") != FORMAT_VERSION:
        raise TransferError(
            f"{folder} is an export of format version {header.get('format_version')}; this "
            f"nbflow reads version {FORMAT_VERSION}."
        )
    for name in ("manifest.json", "events.jsonl"):
        if not (folder / name).is_file():
            raise TransferError(f"{folder} is an incomplete nbflow run export: {name} is missing.")
    return header


def _read_json(path: Path, folder: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TransferError(f"cannot read {path.name} of {folder}: {exc}") from exc


def _read_events(path: Path, run_id: str) -> list[NewEvent]:
    events: list[NewEvent] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if data["seq"] != number:
                    raise ValueError(f"seq {data['seq']} where {number} was expected")
                ts = _parse_time(data["ts"])
                assert ts is not None
                events.append(
                    NewEvent(
                        EventType(data["type"]),
                        data.get("step"),
                        data.get("attempt"),
                        data.get("payload") or {},
                        ts,
                    )
                )
            except (ValueError, KeyError, TypeError, AssertionError) as exc:
                raise TransferError(
                    f"line {number} of {path} is not an event of run {run_id}: {exc}"
                ) from exc
    return events


def _ipc_bytes(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
