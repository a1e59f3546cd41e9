"""Every failure a user can cause is an NbflowError, never a raw TypeError, ValueError,
AttributeError or database error (docs/errors.md lists them; tests/test_error_catalogue.py
checks each one's message).

Two tables: ``CASES``, the wrong inputs users were seen to pass and what the error must
say; and a sweep that calls every public function and method (``nf.__all__``, Flow, Run,
RunView, Store) with each of its arguments replaced in turn by values of the wrong type
or range, on every backend. A public name added without an entry in ``_valid()`` (its
arguments' good values) fails ``test_every_public_callable_is_swept``. Last, every
command of the command line, with each of its options given wrong values, on a good, a
missing and a damaged store, ends in one ``nbflow: error:`` line (a guard: the command
line already turned every exception into one).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from store_backends import BACKENDS, dispose

import nbflow as nf
from nbflow.api.history import RunView
from nbflow.errors import NbflowError, ParameterError, StoreError, UnknownStepError
from nbflow.store.base import Store


@dataclass
class World:
    """A store with a flow and two runs of it, and a scratch folder."""

    store: Store
    flow: nf.Flow
    run: nf.Run
    other: nf.Run
    tmp: Path


def churn(store: Store) -> nf.Flow:
    flow = nf.Flow("leaks", store=store)

    @flow.step
    def raw():
        return pd.DataFrame({"x": [1, 2, 3]})

    @flow.step
    def features(raw, window: int = 3):
        return raw.assign(w=window)

    return flow


@pytest.fixture(params=list(BACKENDS))
def world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.chdir(tmp_path)  # whatever a swept call creates lands here
    store = BACKENDS[request.param](tmp_path)
    flow = churn(store)
    run = flow.run(progress=False)
    other = flow.run(window=4, progress=False)
    yield World(store, flow, run, other, tmp_path)
    dispose(store)


# -- the inputs users were seen to pass --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A wrong input, the error it must raise and what its message must say."""

    call: str
    action: Callable[[World], object]
    error: type[NbflowError]
    says: tuple[str, ...]


CASES = [
    Case("nf.get_run(123)", lambda w: nf.get_run(123, w.store), ParameterError, ("run id",)),
    Case("nf.runs(limit=-1)", lambda w: nf.runs(w.store, limit=-1), ParameterError, ("limit",)),
    Case("nf.runs(limit='3')", lambda w: nf.runs(w.store, limit="3"), ParameterError, ("limit",)),
    Case("nf.runs(status=5)", lambda w: nf.runs(w.store, status=5), ParameterError, ("status",)),
    Case("nf.runs(flow=5)", lambda w: nf.runs(w.store, flow=5), ParameterError, ("flow",)),
    Case("nf.events(123)", lambda w: nf.events(123, w.store), ParameterError, ("run id",)),
    Case("nf.open_store(123)", lambda w: nf.open_store(123), StoreError, ("store location",)),
    Case(
        "nf.open_store(trust='yes')",
        lambda w: nf.open_store("memory://", trust="yes"),
        ParameterError,
        ("trust",),
    ),
    Case("store.sql(123)", lambda w: w.store.sql(123), ParameterError, ("store.sql",)),
    Case(
        "flow.run(max_workers='2')",
        lambda w: w.flow.run(max_workers="2", progress=False),
        ParameterError,
        ("max_workers",),
    ),
    Case(
        "flow.run(force=123)",
        lambda w: w.flow.run(force=123, progress=False),
        ParameterError,
        ("force",),
    ),
    Case(
        "flow.run(targets=5)",
        lambda w: w.flow.run(targets=5, progress=False),
        ParameterError,
        ("targets",),
    ),
    Case(
        "flow.run(background='x')",
        lambda w: w.flow.run(background="x", progress=False),
        ParameterError,
        ("background",),
    ),
    Case("flow.status(5)", lambda w: w.flow.status(5), ParameterError, ("Run or a run id",)),
    Case("flow.lineage(5)", lambda w: w.flow.lineage(5), ParameterError, ("Run or a run id",)),
    Case("flow.show(5)", lambda w: w.flow.show(5), ParameterError, ("Run",)),
    Case("flow.on_event(5)", lambda w: w.flow.on_event(5), ParameterError, ("function",)),
    Case("Flow('a', store=5)", lambda w: nf.Flow("a", store=5), StoreError, ("store location",)),
    Case("run[5]", lambda w: w.run[5], UnknownStepError, ("has no step 5",)),
    Case("run.fork(from_step=5)", lambda w: w.run.fork(from_step=5), UnknownStepError, ("5",)),
    Case("run.wait('x')", lambda w: w.run.wait("x"), ParameterError, ("timeout",)),
    Case(
        "run.resume(bogus=1)",
        lambda w: w.run.resume(bogus=1),
        ParameterError,
        ("no option 'bogus'",),
    ),
    Case("Run(store, 123)", lambda w: nf.Run(w.store, 123), ParameterError, ("run id",)),
    Case("Run(5, 'x')", lambda w: nf.Run(5, "x"), ParameterError, ("store",)),
    Case("nf.diff(run, 5)", lambda w: nf.diff(w.run, 5), ParameterError, ("run_b",)),
    Case("nf.diff('a', 'b')", lambda w: nf.diff("a", "b"), ParameterError, ("at least one Run",)),
    Case(
        "nf.diff(run, other, step=5)",
        lambda w: nf.diff(w.run, w.other, step=5),
        ParameterError,
        ("step",),
    ),
    Case("store.gc(flow=5)", lambda w: w.store.gc(flow=5), ParameterError, ("flow",)),
    Case(
        "store.check(repair='x')", lambda w: w.store.check(repair="x"), ParameterError, ("repair",)
    ),
    Case(
        "store.state_at(id, 'x')",
        lambda w: w.store.state_at(w.run.id, "x"),
        ParameterError,
        ("version",),
    ),
    Case(
        "store.claim(id, ttl='x')",
        lambda w: w.store.claim(w.run.id, ttl="x"),
        ParameterError,
        ("ttl",),
    ),
    Case(
        "nf.export_run(store, id, 5)",
        lambda w: nf.export_run(w.store, w.run.id, 5),
        ParameterError,
        ("directory",),
    ),
    Case(
        "nf.copy_runs(store, 'memory://', 5)",
        lambda w: nf.copy_runs(w.store, "memory://", 5),
        ParameterError,
        ("run_ids",),
    ),
    Case("nf.browse(page_size=0)", lambda w: nf.browse(w.store, page_size=0), ParameterError, ()),
    Case("nf.flush_sinks('x')", lambda w: nf.flush_sinks("x"), ParameterError, ("timeout",)),
    Case("nf.add_sink(5)", lambda w: nf.add_sink(5), ParameterError, ("sink",)),
    Case(
        "nf.load_ipython_extension(5)",
        lambda w: nf.load_ipython_extension(5),
        ParameterError,
        ("IPython",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.call for c in CASES])
def test_a_wrong_input_says_what_is_wrong(world: World, case: Case) -> None:
    with pytest.raises(NbflowError) as caught:
        case.action(world)
    assert isinstance(caught.value, case.error), repr(caught.value)
    for fact in case.says:
        assert fact in str(caught.value), str(caught.value)


# -- the sweep ----------------------------------------------------------------------------------

#: Values of the wrong type or range, tried in every argument in turn.
WRONG: tuple[Any, ...] = (123, -1, 1.5, True, "no-such-thing", b"bytes", object(), [object()], {})


def _callables(world: World) -> dict[str, Callable[..., Any]]:
    """Every public callable, by the name VALID knows it by."""
    found: dict[str, Callable[..., Any]] = {}
    for name in nf.__all__:
        value = getattr(nf, name)
        if callable(value) and not inspect.isclass(value):
            found[f"nf.{name}"] = value
    found["nf.Flow"], found["nf.Run"], found["nf.RunView"] = nf.Flow, nf.Run, RunView
    found["nf.JSONLSink"] = nf.JSONLSink
    for owner, obj in (("Flow", world.flow), ("Run", world.run), ("Store", world.store)):
        for name, _ in inspect.getmembers(type(obj), callable):
            if not name.startswith("_") or name == "__getitem__":
                found[f"{owner}.{name}"] = getattr(obj, name)
    view = world.run.at(1)
    for name, _ in inspect.getmembers(RunView, callable):
        if not name.startswith("_") or name == "__getitem__":
            found[f"RunView.{name}"] = getattr(view, name)
    return found


def _valid(world: World) -> dict[str, dict[str, Any] | str]:
    """For each public callable: good values for its arguments (the sweep wrongs one at a
    time), or why it is not swept."""
    w = world
    step = "raw"
    run_id = w.run.id
    ref = w.run.ref(step)
    return {
        "nf.runs": {"store": w.store},
        "nf.events": {"run_id": run_id, "store": w.store},
        "nf.get_run": {"run_id": run_id, "store": w.store},
        "nf.open_store": {"store": "memory://", "trust": True, "tenant": "team-a"},
        "nf.diff": {"run_a": w.run, "run_b": w.other},
        "nf.export_run": {"store": w.store, "run_id": run_id, "directory": str(w.tmp / "out")},
        "nf.import_run": {"store": w.store, "directory": str(w.tmp / "no-export")},
        "nf.mark_trusted": {"store": w.store, "run_id": run_id},
        "nf.copy_runs": {"source": w.store, "target": "memory://", "run_ids": [run_id]},
        "nf.load_notebook": {"path": str(w.tmp / "missing.ipynb")},
        "nf.untracked": {"value": w.store},
        "nf.browse": {"target": w.store},
        "nf.add_sink": "registers the sink for the whole process; see CASES",
        "nf.remove_sink": {"sink": print},
        "nf.flush_sinks": {"timeout": 1.0},
        "nf.sink_stats": "takes no argument",
        "nf.load_ipython_extension": "needs an IPython shell; see CASES",
        "nf.Flow": {"name": "swept", "store": w.store},
        "nf.Run": {"store": w.store, "run_id": run_id},
        "nf.RunView": {"store": w.store, "run_id": run_id, "version": 1},
        "nf.JSONLSink": {"path": str(w.tmp / "events.jsonl")},
        "Flow.step": "its options are checked by tests/test_engine.py; see also CASES",
        "Flow.gate": "the options of Flow.step (tests/test_gates.py); it would change the flow",
        "nf.gate": "Flow.gate given the flow; it would change the flow the sweep runs",
        "nf.approve": {"token": "nbflow-gate.v1.e30.AAAA", "store": w.store},
        "nf.reject": {"token": "nbflow-gate.v1.e30.AAAA", "store": w.store},
        "Run.approve": {"gate": "review", "by": "ann", "comment": "ok"},
        "Run.reject": {"gate": "review", "by": "ann", "comment": "no"},
        "Run.gate_token": {"gate": "review"},
        "Store.gate_keys": {},
        "Flow.add_step": "takes a Step built by nbflow (the cell magics)",
        "Flow.run": {"progress": False},
        "Flow.runs": {},
        "Flow.status": {},
        "Flow.lineage": {"run": w.run},
        "Flow.show": {},
        "Flow.graph": {},
        "Flow.remove_step": "removes a step: the sweep would change the flow it runs",
        "Flow.on_event": "registers the callback; see CASES",
        "Flow.latest_run": {},
        "Run.__getitem__": {"step": step},
        "Run.ref": {"step": step},
        "Run.table_name": {"step": step},
        "Run.at": {"version": 1},
        "Run.fork": {"from_step": "features", "progress": False},
        "Run.resume": "takes **options; its names are checked (see CASES)",
        "Run.cancel": {},
        "Run.provenance": {},
        "Run.reproduce": "starts a fresh process per call; its bad input is tested in "
        "tests/test_reproduce.py (test_bad_input_is_refused_clearly)",
        "Run.wait": {"timeout": 1.0},
        "Run.step_states": {},
        "RunView.__getitem__": {"step": step},
        "RunView.step_states": {},
        "Store.sql": {"query": "SELECT 1 AS one"},
        "Store.runs_frame": {},
        "Store.list_runs": {},
        "Store.events_frame": {"run_id": run_id},
        "Store.steps_frame": {"run_id": run_id},
        "Store.get_run": {"run_id": run_id},
        "Store.executions": {"run_id": run_id},
        "Store.read_events": {"run_id": run_id, "upto": 2},
        "Store.state_at": {"run_id": run_id, "version": 2},
        "Store.load_state": {"run_id": run_id},
        "Store.lease": {"run_id": run_id},
        "Store.claim": "takes a run's lease: covered by CASES and tests/test_leases.py",
        "Store.renew": {"run_id": run_id},
        "Store.release": {"run_id": run_id},
        "Store.gc": {"dry_run": True},
        "Store.with_tenant": {"tenant": "team-a"},
        "Store.connection_uri": {},
        "Store.change_token": {},
        "Store.check": {},
        "Store.get_flow": {"name": "leaks", "fingerprint": "nope"},
        "Store.has_blob": {"hash": ref.hash},
        "Store.table_name": {"ref": ref},
        "Store.load_value": {"ref": ref},
        "Store.load_output": {"ref": ref, "step": step, "run_id": run_id},
        "Store.list_blobs": {},
        "Store.storage_bytes": {},
        "Store.compact": {},
        "Store.close": "closes the store the sweep uses",
        "Store.release_connection": {},
        "Store.release_if_idle": {},
        "Store.hold": {},
        "Store.abandon": "stops this object executing a run: see tests/test_full_disk.py",
        "Store.untrusted_runs": {"run_ids": [run_id]},
        "Store.clear_untrusted": {"run_ids": [run_id]},
        "Store.mark_untrusted": "backend interface: takes UntrustedRun records",
        "Store.reap_interrupted": "takes run records nbflow read",
        "Store.referenced_hashes": "takes run ids nbflow read (gc's)",
        "Store.put_flow": "backend interface: takes a FlowRecord",
        "Store.ensure_flow": "backend interface: takes a FlowRecord",
        "Store.create_run": "backend interface: takes a RunRecord",
        "Store.record_run": "backend interface: takes a RunRecord and events",
        "Store.append": "backend interface: takes the events the engine builds",
        "Store.put_value": "backend interface: takes an EncodedValue",
        "Store.read_encoded": "backend interface: takes a ValueRef nbflow read",
        "Store.cache_candidates": "backend interface: takes fingerprints nbflow computed",
        "Store.cache_hits": "backend interface: takes fingerprints nbflow computed",
    }


def test_every_public_callable_is_swept(world: World) -> None:
    valid = _valid(world)
    missing = sorted(set(_callables(world)) - set(valid))
    assert not missing, (
        f"add {', '.join(missing)} to _valid() in tests/test_error_leaks.py: good values for "
        "its arguments (the sweep then tries wrong ones), or why it is not swept"
    )


def _sweep_calls(world: World) -> Iterator[tuple[str, Callable[[], Any]]]:
    callables = _callables(world)
    for name, good in _valid(world).items():
        if isinstance(good, str) or name not in callables:
            continue
        target = callables[name]
        parameters = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
        ]
        for parameter in parameters:
            for wrong in WRONG:
                arguments = {**good, parameter.name: wrong}

                def call(target: Any = target, arguments: dict[str, Any] = arguments) -> Any:
                    return target(**arguments)

                yield f"{name}({parameter.name}={wrong!r:.20})", call


def test_no_wrong_argument_leaks_a_raw_error(world: World) -> None:
    leaks = []
    for label, call in _sweep_calls(world):
        try:
            call()
        except NbflowError:
            pass
        except Exception as exc:
            leaks.append(f"{label}: {type(exc).__name__}: {str(exc)[:120]}")
    assert not leaks, "raw errors:\n" + "\n".join(leaks)
    # (The sweep ran against the store the fixture opened; it is still usable.)
    assert len(nf.runs(world.store)) >= 2


# -- the command line ---------------------------------------------------------------------------

#: Values tried in every option of every command that takes a value.
WRONG_TEXT = ("-1", "abc", "", "no-such-thing", "1.5", "/")


def _command_lines(store: str) -> Iterator[list[str]]:
    """Every command with each of its value options given a wrong value in turn, its
    arguments filled with names that exist nowhere."""
    import click

    from nbflow.cli import main

    for name, command in sorted(main.commands.items()):
        base = [name]
        for param in command.params:
            if isinstance(param, click.Argument):
                base.append("no-such-thing")
        if any(p.name == "store" for p in command.params):
            base += ["--store", store]
        if name == "copy":
            base += ["--from", store, "--to", "memory://"]
        yield base
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag or param.name == "store":
                continue
            for wrong in WRONG_TEXT:
                yield [*base, param.opts[0], wrong]


@pytest.mark.parametrize("store", ["valid", "folder", "damaged"])
def test_no_command_line_leaks_a_traceback(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_cli import invoke

    # An argument naming a store that exists nowhere ('no-such-thing') may be created as
    # one: here, not in the checkout.
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    path = tmp_path / "s.duckdb"
    with nf.open_store(path) as opened:
        churn(opened).run(progress=False)
    if store == "folder":
        path = tmp_path
    elif store == "damaged":
        import duckdb

        con = duckdb.connect(str(path))
        con.execute("UPDATE nbflow_meta SET value = 'x' WHERE key = 'schema_version'")
        con.close()
    leaks = []
    for args in _command_lines(str(path)):
        result = invoke(*args)
        if result.exit_code == 0:
            continue
        lines = result.stderr.strip().splitlines()
        raw = result.exception is not None and not isinstance(result.exception, SystemExit)
        if raw or len(lines) != 1 or not lines[0].startswith("nbflow: error: "):
            leaks.append(f"nbflow {' '.join(args)}: {result.stderr[-300:]!r} {result.exception!r}")
    assert not leaks, "\n".join(leaks)
