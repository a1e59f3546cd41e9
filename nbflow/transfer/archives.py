"""Export one run to a self-describing folder, and import it into another store.

An export folder holds:

* ``run.json``: the format tag, the run record, its parameters and the flow definition
  (every step's source);
* ``events.jsonl``: the run's event log, one event a line, in order;
* ``values/``: each value the run refers to, once per content hash: DataFrames as Parquet
  (the encoded Arrow table) with their nbflow ``meta`` as ``<hash>.meta.json``, arrays as
  ``.npy``, JSON values as ``.json``, anything else as ``.pickle`` (named as such);
* ``manifest.json``: content hash -> file, codec, type and meta file.

Every file is strict JSON (non-finite floats in a tagged form, see
:mod:`nbflow.transfer.json_text`). The folder is written next to its target under a temporary
name (``.NAME.nbflow-export.XXXX``, holding a note of the process writing it), then
renamed: a half-written export is never left under the target's name, and what a killed
export leaves is removed by the next export into the same folder.

An import believes nothing it reads: every value is hashed again and refused unless it
hashes to its name, every file must lie inside the folder, every value the events refer
to must be there, ids are checked like any run id, and the log must fold. All of that is
checked before anything is written, so a refused import leaves the store as it was.
Unless the import is trusted, the run and its pickles are marked as someone else's
(:mod:`nbflow.store.untrusted`): its pickles do not load, and its outputs are no cache
hits for your own runs, until you trust it (:func:`mark_trusted`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbflow import arguments
from nbflow.errors import InvalidTransitionError, TransferError, UnknownRunError
from nbflow.store.base import Store
from nbflow.store.gc import refs_in_payload
from nbflow.store.records import Codec, Event, FlowRecord, NewEvent, RunRecord, ValueRef, utcnow
from nbflow.store.tenants import imported_as
from nbflow.store.untrusted import (
    UntrustedRun,
    keeps_marks,
    marked,
    origin,
    unmarked,
    with_forks,
)
from nbflow.transfer.json_text import (
    check_run_id,
    dumps,
    event_from_json,
    event_to_json,
    flow_from_json,
    flow_to_json,
    read_json,
    run_from_json,
    run_to_json,
)
from nbflow.transfer.values import check_hash, read_value, write_value

if TYPE_CHECKING:
    from nbflow.values import EncodedValue

__all__ = [
    "FORMAT",
    "ExportedRun",
    "add_run",
    "export_run",
    "import_run",
    "mark_trusted",
    "read_export",
    "remove_export_leftovers",
    "trust_run",
]

#: The tag ``run.json`` carries, telling an nbflow export from any other folder.
FORMAT = "nbflow-run-export"
#: Version 2: strict JSON (tagged non-finite floats), every value the events refer to.
FORMAT_VERSION = 2
_READS = (1, 2)

#: The infix of an export's temporary folder, and the note in it naming its writer.
TEMP_INFIX = ".nbflow-export."
WRITER_NOTE = ".nbflow-export-writer.json"


def export_run(store: Store, run_id: str, directory: str | os.PathLike[str]) -> Path:
    """Write run ``run_id`` of ``store`` to the new folder ``directory``; return its path.

    The folder must not exist yet. Every value the run refers to is written once per
    content hash, so the run can be imported into any store with :func:`import_run`.
    Pickles are copied as bytes, never unpickled. What an earlier export killed midway
    left next to ``directory`` is removed first (with a warning naming it).
    """
    arguments.instance(store, Store, "export_run's store", hint="nf.open_store(path) opens one.")
    target = Path(arguments.path(directory, "export_run's directory"))
    if target.exists():
        raise TransferError(f"{target} already exists: export into a new folder.")
    if not target.parent.is_dir():
        raise TransferError(f"cannot export into {target}: {target.parent} is not a folder.")
    for leftover in remove_export_leftovers(target.parent):
        warnings.warn(f"removed {leftover}, left by an export whose process is gone", stacklevel=2)
    record = store.get_run(run_id)  # UnknownRunError names the run
    flow = store.get_flow(record.flow, record.flow_fingerprint)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMP_INFIX}", dir=target.parent))
    try:
        _write_note(temp)
        (temp / "values").mkdir()
        events = store.read_events(run_id)
        manifest: dict[str, Any] = {}
        for ref in _refs(store, run_id, events):
            if ref.hash not in manifest:
                manifest[ref.hash] = write_value(store, ref, temp / "values")
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run": run_to_json(record),
            "params": dict(record.params),
            "flow": None if flow is None else flow_to_json(flow),
        }
        _write_json(temp / "run.json", header)
        _write_json(temp / "manifest.json", {"values": manifest})
        with open(temp / "events.jsonl", "w", encoding="utf-8") as out:
            for event in events:
                out.write(dumps(event_to_json(event)) + "\n")
        os.rename(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):  # (a note left behind is harmless)
        (target / WRITER_NOTE).unlink(missing_ok=True)
    return target


def _refs(store: Store, run_id: str, events: Iterable[Event]) -> list[ValueRef]:
    """Every value the run refers to: its executions' outputs, then what its events name
    (a fork's plan names the outputs it reuses)."""
    refs = [e.output for e in store.executions(run_id) if e.output is not None]
    for event in events:
        refs += [ValueRef.from_json(r) for r in refs_in_payload(event.type, event.payload)]
    return refs


@dataclass(frozen=True)
class ExportedRun:
    """An export folder read and checked by :func:`read_export`, ready to be written into
    a store by :func:`import_run`: nothing in it is taken on trust any more."""

    folder: Path
    run: RunRecord  # as created: pending at version 0
    flow: FlowRecord | None
    events: tuple[NewEvent, ...]
    values: tuple[EncodedValue, ...]  # every value the events refer to, hashed again


def read_export(directory: str | os.PathLike[str]) -> ExportedRun:
    """Read the export in ``directory`` and check all of it; TransferError, naming the
    problem, for a folder that is not an export or one that was changed or damaged (see
    :func:`import_run`). Writes nothing anywhere."""
    folder = Path(arguments.path(directory, "import_run's directory"))
    header = _read_header(folder)
    run = run_from_json(header.get("run"))
    flow = _checked_flow(header.get("flow"), run)
    events = _read_events(folder / "events.jsonl", run.run_id)
    _check_names(run, flow, events)
    _check_fold(run, events)
    wanted = _wanted_values(events, folder)
    manifest = read_json(folder / "manifest.json", folder)
    listed = manifest.get("values") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict):
        raise TransferError(f"the manifest.json of {folder} has no 'values' object")
    encoded: list[EncodedValue] = []
    for hash, codec in wanted.items():
        if hash not in listed:
            raise TransferError(
                f"the export {folder} does not contain the value {hash}, which its events "
                "refer to: it is incomplete. Nothing was imported."
            )
        value = read_value(folder, hash, listed[hash])
        if value.ref.codec is not codec:
            raise TransferError(
                f"the events of {folder} refer to the value {hash} as {codec.value}, its "
                f"manifest lists it as {value.ref.codec.value}: the export was changed"
            )
        encoded.append(value)
    return ExportedRun(folder, run, flow, tuple(events), tuple(encoded))


def import_run(
    store: Store,
    directory: str | os.PathLike[str] | ExportedRun,
    *,
    trust: bool = False,
    tenant: str | None = None,
) -> str:
    """Load the run exported to ``directory`` (or already read by :func:`read_export`)
    into ``store``; return its run id.

    The flow definition, every value and the run with its whole event log are added; the
    store's views are rebuilt by folding the events. Refused, with TransferError and
    nothing written: a folder that is not an export, a run id the store already holds or
    that is no valid run id, a step name no step can have, a file outside the folder, a
    value the events refer to that is missing from it or does not hash to its name, a
    flow definition that is not the run's, a log that does not fold.

    An imported run is someone else's, unless ``trust=True`` here says you trust whoever
    made the export: until it is marked trusted (:func:`mark_trusted`), loading one of
    its pickles is refused (UntrustedImportError) even by a trusted store, and none of its
    outputs is a cache hit for another run (nothing shows that your code computed them:
    a run of your flow computes its steps itself). Forks and ``resume`` of the run itself
    use its outputs; a fork of it is marked like it.
    The run keeps its tenant; another tenant's run is imported only as ``tenant=``'s
    (:func:`nbflow.store.tenants.imported_as`).
    """
    arguments.instance(store, Store, "import_run's store", hint="nf.open_store(path) opens one.")
    if not isinstance(directory, ExportedRun):
        directory = arguments.path(directory, "import_run's directory")
    if isinstance(directory, ExportedRun):
        exported = directory
    else:  # a run the store holds is refused before the values are read
        _refuse_existing(store, run_from_json(_read_header(Path(directory)).get("run")))
        exported = read_export(directory)
    run = imported_as(exported.run, store, tenant)
    _refuse_existing(store, run)
    if not trust and not keeps_marks(store):
        raise TransferError(
            f"{store} cannot mark runs untrusted (its backend lacks mark_untrusted), so an "
            "import without trust could stand in for your own steps: nothing imported. "
            "Import with trust=True (--trust) only if you trust whoever made the export."
        )
    folder = str(exported.folder.resolve())
    where = {"imported_from": folder, "run_id": run.run_id, "at": utcnow().isoformat()}
    # -- every check passed: write --
    if not trust:
        # Marked before the run exists: not for an instant is it a cache hit.
        store.mark_untrusted([UntrustedRun(run.run_id, f"imported from {folder}", utcnow())])
    if exported.flow is not None:
        store.put_flow(exported.flow)
    for value in exported.values:
        if value.ref.codec is Codec.PICKLE and not trust:
            value = value.with_meta(marked(value.meta, where))
        store.put_value(value)
    add_run(store, run, exported.events)
    if trust:
        mark_trusted(store, run.run_id)  # also values an earlier import left untrusted
    return run.run_id


def _refuse_existing(store: Store, run: RunRecord) -> None:
    try:
        store.get_run(run.run_id)
    except UnknownRunError:
        return
    raise TransferError(
        f"run {run.run_id} already exists in {store.uri or store}: nothing imported."
    )


def mark_trusted(store: Store, run_id: str) -> list[str]:
    """Trust run ``run_id`` and the pickles it refers to; return the hashes of the
    pickles that were marked untrusted.

    For a run imported without ``trust=True`` (or copied from an untrusted store), once
    you trust whoever made it: its pickles load, and its outputs are cache hits for your
    runs from then on, as are those of its forks. Values are shared by content, so a
    value another import brought too is trusted from then on as well. Marking does not
    make a store opened with ``trust=False`` unpickle anything.
    """
    arguments.instance(store, Store, "mark_trusted's store", hint="nf.open_store(path) opens one.")
    arguments.run_id(run_id)
    return trust_run(store, run_id)[1]


def trust_run(store: Store, run_id: str) -> tuple[list[str], list[str]]:
    """:func:`mark_trusted`, saying what it did: the runs whose mark it removed (the run
    and its forks), and the hashes of the pickles it marked trusted."""
    store.get_run(run_id)  # UnknownRunError names the run
    done: list[str] = []
    for ref in _refs(store, run_id, store.read_events(run_id)):
        if ref.codec is not Codec.PICKLE or ref.hash in done:
            continue
        meta = store.read_encoded(ref).meta
        if origin(meta) is None:
            continue
        try:
            store._replace_blob_meta(ref.hash, unmarked(meta))
        except NotImplementedError:
            raise TransferError(
                f"{store} cannot mark values trusted (its backend lacks _replace_blob_meta)"
            ) from None
        done.append(ref.hash)
    runs = store.clear_untrusted(with_forks(store.untrusted_runs(), run_id))
    return runs, done


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


def remove_export_leftovers(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary folders that exports killed midway left in ``folder``; return
    them. Only folders named like one whose note names a process of this machine that is
    gone are removed: an export still writing, or one from another machine, is left."""
    from nbflow.store.leases import host_name, pid_alive

    removed: list[Path] = []
    try:
        candidates = [p for p in Path(folder).iterdir() if TEMP_INFIX in p.name]
    except OSError:
        return removed
    for path in candidates:
        if not path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        try:
            note = json.loads((path / WRITER_NOTE).read_text(encoding="utf-8"))
            pid, start, host = int(note["pid"]), note.get("proc_start"), note["host"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no note yet (being created), or not ours: leave it
        if host != host_name() or pid_alive(pid, start if isinstance(start, int) else None):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


# -- reading a folder ------------------------------------------------------------------------


def _read_header(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise TransferError(f"{folder} is not a folder: nothing to import.")
    if not (folder / "run.json").is_file():
        raise TransferError(
            f"{folder} is not an nbflow run export (it has no run.json); make one with "
            "`nbflow export RUN DIR`."
        )
    header = read_json(folder / "run.json", folder)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TransferError(f"{folder} is not an nbflow run export (run.json has no {FORMAT!r}).")
    if header.get("format_version") not in _READS:
        raise TransferError(
            f"{folder} is an export of format version {header.get('format_version')!r}; this "
            f"nbflow reads versions {', '.join(map(str, _READS))}."
        )
    for name in ("manifest.json", "events.jsonl"):
        if not (folder / name).is_file():
            raise TransferError(f"{folder} is an incomplete nbflow run export: {name} is missing.")
    return header


def _checked_flow(data: Any, run: RunRecord) -> FlowRecord | None:
    """The export's flow definition, if it has one: the run's flow, whose fingerprint is
    that of its steps (so it cannot stand in for another definition)."""
    if data is None:
        return None
    from nbflow.engine.cache import canonical_json

    flow = flow_from_json(data)
    if (flow.name, flow.fingerprint) != (run.flow, run.flow_fingerprint):
        raise TransferError(
            f"the export's flow definition is {flow.name!r} {flow.fingerprint}, but its run is "
            f"of {run.flow!r} {run.flow_fingerprint}: the export was changed"
        )
    import xxhash

    shape = [(s.name, s.fingerprint, list(s.dependencies)) for s in flow.steps]
    if xxhash.xxh3_128_hexdigest(canonical_json(shape).encode()) != flow.fingerprint:
        raise TransferError(
            f"the export's flow definition does not match its fingerprint {flow.fingerprint} "
            "(its steps were changed)"
        )
    return flow


def _read_events(path: Path, run_id: str) -> list[NewEvent]:
    from nbflow.transfer.json_text import loads

    events: list[NewEvent] = []
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    events.append(event_from_json(loads(line), number))
                except (TransferError, ValueError) as exc:
                    raise TransferError(
                        f"line {number} of {path} is not an event of run {run_id}: {exc}"
                    ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TransferError(f"cannot read {path}: {exc}") from exc
    return events


def _check_names(run: RunRecord, flow: FlowRecord | None, events: Sequence[NewEvent]) -> None:
    """Step names are names a step can have (identifiers), and the run ids the events
    name (parents, the runs outputs came from) are run ids."""
    steps = [*run.steps, *(s.name for s in (flow.steps if flow is not None else ()))]
    steps += [e.step for e in events if e.step is not None]
    for name in steps:
        if not isinstance(name, str) or not name.isidentifier():
            raise TransferError(
                f"the export names a step {name!r}, which no step can be called (a step's "
                "name is a Python identifier)"
            )
    for number, event in enumerate(events, 1):
        payload = event.payload
        found = [payload.get(k) for k in ("parent_run_id", "reused_from", "source_run_id")]
        reused = payload.get("reused")
        if isinstance(reused, dict):
            found += [r.get("source_run_id") for r in reused.values() if isinstance(r, dict)]
        for ident in found:
            if ident is not None:
                check_run_id(ident, f"event {number} names the run id")


def _check_fold(run: RunRecord, events: Sequence[NewEvent]) -> None:
    """Fold the log in memory first: one that does not fold is refused before any write."""
    from nbflow.store.fold import fold

    stamped = [
        Event(run.run_id, i, e.ts, e.type, e.step, e.attempt, e.payload)
        for i, e in enumerate(events, 1)
    ]
    try:
        fold(run, stamped)
    except InvalidTransitionError as exc:
        raise TransferError(f"the events of the export do not make a run: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TransferError(
            f"the events of the export hold something nbflow never writes ({exc!r})"
        ) from None


def _wanted_values(events: Sequence[NewEvent], folder: Path) -> dict[str, Codec]:
    """The blob values the events refer to, by hash, with their codec; an inline JSON
    value is checked against its hash here (it travels in the events)."""
    from nbflow.values import encode

    wanted: dict[str, Codec] = {}
    for number, event in enumerate(events, 1):
        for data in _ref_dicts(event):
            try:
                ref = ValueRef.from_json(data)
            except (KeyError, TypeError, ValueError) as exc:
                raise TransferError(f"event {number} of {folder} has a bad ref ({exc!r})") from None
            check_hash(ref.hash, f"event {number} of {folder} refers to the value")
            if ref.is_inline:
                if encode(ref.inline, step="import").ref.hash != ref.hash:
                    raise TransferError(
                        f"the value {ref.hash} inline in event {number} of {folder} does not "
                        "match its content hash: the export was changed. Nothing was imported."
                    )
                continue
            if wanted.setdefault(ref.hash, ref.codec) is not ref.codec:
                raise TransferError(
                    f"the events of {folder} refer to the value {ref.hash} with two codecs"
                )
    return wanted


def _ref_dicts(event: NewEvent) -> list[Any]:
    """Every ref an event carries (its output, a fork's reused outputs, the values of a
    run's record: refs_in_payload), inline ones too."""
    payload = event.payload
    found = [payload.get("output"), *refs_in_payload(event.type, payload)]
    reused = payload.get("reused")
    if isinstance(reused, dict):
        found += [r.get("output") for r in reused.values() if isinstance(r, dict)]
    return [r for r in found if r]


def _write_note(temp: Path) -> None:
    """Say which process writes this temporary folder, so a leftover can be told apart."""
    from nbflow.store.leases import host_name, process_start

    pid = os.getpid()
    note = {"pid": pid, "proc_start": process_start(pid), "host": host_name()}
    (temp / WRITER_NOTE).write_text(json.dumps(note), encoding="utf-8")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(dumps(data, indent=1), encoding="utf-8")
