"""Defining a run's steps again from its record alone (the half of a reproduction that
runs in the fresh process).

Everything comes from the record (:func:`nbflow.store.provenance.read_provenance`):
the user's modules it used are served from their recorded sources by an import hook, the
globals its steps read are defined again in one namespace (imports, constants, data
values loaded from the store, helper functions and classes executed from their source),
and each step's source is executed there. What cannot be defined again makes the step
fail when it runs, with why: never a crash of the reproduction as a whole.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Mapping
from typing import Any

from nbflow.definition.step import Step, StepOptions
from nbflow.store.provenance import Provenance, StepProvenance

__all__ = ["RecordedModules", "rebuild_steps"]

_MODULE = "__nbflow_reproduction__"

# The order entries are defined in: values first, then code (a class body runs at once
# and may need functions and values; functions resolve their globals when called).
_ORDER = {"import": 0, "from": 0, "constant": 0, "data": 1, "function": 2, "class": 3, "alias": 4}


class RecordedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """An import hook that serves the user's modules from their recorded sources, ahead
    of whatever is on disk now (the record, not today's files, is reproduced)."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = {name: text for name, text in sources.items() if text}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        """A spec for a recorded module, else None (the usual finders look)."""
        if fullname not in self.sources:
            return None
        is_package = any(other.startswith(fullname + ".") for other in self.sources)
        return importlib.util.spec_from_loader(fullname, self, is_package=is_package)

    def create_module(self, spec: Any) -> None:
        """None: the default module object."""
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        """Run the recorded source in ``module``."""
        name = module.__name__
        module.__file__ = f"<recorded module {name}>"
        if any(other.startswith(name + ".") for other in self.sources):
            module.__path__ = []
        _run(self.sources[name], module.__file__, module.__dict__)


def _run(source: str, filename: str, namespace: dict[str, Any]) -> None:
    """Execute recorded ``source`` in ``namespace``, its lines kept where ``inspect``
    finds them (so that the reproduction's own record holds the same sources)."""
    from nbflow.definition.cells import remember_source

    remember_source(filename, source)
    exec(compile(source, filename, "exec"), namespace)


def _define(namespace: dict[str, Any], name: str, entry: Mapping[str, Any], load: Any) -> None:
    kind = entry.get("kind")
    if kind == "import":
        module = importlib.import_module(entry["module"])
        namespace[name] = module
    elif kind == "from":
        target: Any = importlib.import_module(entry["module"])
        for part in str(entry["qualname"]).split("."):
            target = getattr(target, part)
        namespace[name] = target
    elif kind == "constant":
        import ast

        namespace[name] = ast.literal_eval(entry["literal"])
    elif kind == "data":
        namespace[name] = load(name)
    elif kind in ("function", "class"):
        _run(entry["source"], f"<recorded {kind} {name}>", namespace)
        defined = entry.get("defines", name)
        if defined != name:
            namespace[name] = namespace[defined]
    elif kind == "alias":
        namespace[name] = namespace[entry["of"]]
    else:
        raise ValueError(f"unknown kind of record entry: {kind!r}")


def _failing(step: StepProvenance, reason: str) -> Any:
    """A function with the step's parameters that raises why the step cannot run."""
    from nbflow.errors import ReproductionError

    def cannot_run(**_: Any) -> Any:
        raise ReproductionError(reason)

    cannot_run.__name__ = step.name
    parameters = [
        *(f"{d}" for d in step.dependencies),
        *(f"{p}={v!r}" for p, v in step.params.items()),
    ]
    text = f"def {step.name}({', '.join(parameters)}):\n    return _raise()\n"
    namespace: dict[str, Any] = {"_raise": lambda: cannot_run()}
    try:
        exec(text, namespace)
        return namespace[step.name]
    except Exception:  # parameters whose defaults do not read back: a bare signature
        return cannot_run


def rebuild_steps(
    provenance: Provenance,
    load_data: Any,
) -> tuple[list[Step], dict[str, dict[str, str]]]:
    """The run's steps, defined again from ``provenance``; and for each step, the names
    that could not be defined again, with why.

    ``load_data(step, name)`` returns the stored value of a data global.
    """
    modules: dict[str, str] = {}
    for step in provenance.steps.values():
        modules.update(step.modules)
    if modules:
        sys.meta_path.insert(0, RecordedModules(modules))
        for name in modules:
            sys.modules.pop(name, None)  # (a module of the same name imported earlier)
    module = types.ModuleType(_MODULE)
    # Registered, as a notebook's __main__ is (dataclasses and pickle look their classes'
    # module up), and pickled by value, so that process executors' workers get its code.
    sys.modules[_MODULE] = module
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    namespace = module.__dict__
    namespace["__builtins__"] = builtins
    problems: dict[str, dict[str, str]] = {}
    defined: dict[str, str | None] = {}  # name -> why it could not be defined (None: it was)
    for step in provenance.steps.values():
        found = problems.setdefault(step.name, dict(step.problems))
        ordered = sorted(step.entries.items(), key=lambda item: _ORDER.get(str(item[1]["kind"]), 5))
        for name, entry in ordered:
            if name in defined:
                if defined[name] is not None:
                    found[name] = str(defined[name])
                continue
            try:
                _define(namespace, name, entry, lambda n, s=step.name: load_data(s, n))
                defined[name] = None
            except Exception as exc:  # any error the recorded code raises: the step's reason
                why = _why(name, entry, exc)
                defined[name] = why
                found[name] = why
    # Process executors' workers have no import hook: they get the recorded modules' code
    # by value, with the functions that use them.
    for name in modules:
        if name in sys.modules:
            with contextlib.suppress(Exception):  # (not a module cloudpickle can take)
                cloudpickle.register_pickle_by_value(sys.modules[name])
    steps = []
    for step in provenance.steps.values():
        func = _step_function(step, namespace, problems[step.name])
        options = _options(step.options, step)
        declared = tuple(d for d in step.dependencies if d not in _parameters(func))
        steps.append(Step.from_function(func, name=step.name, depends_on=declared, options=options))
    return steps, {s: p for s, p in problems.items() if p}


def _step_function(
    step: StepProvenance, namespace: dict[str, Any], problems: dict[str, str]
) -> Any:
    if not step.source:
        return _failing(step, f"the record of step {step.name!r} holds no source")
    try:
        _run(step.source, f"<recorded step {step.name}>", namespace)
        return namespace[step.defines or step.name]
    except Exception as exc:  # the recorded source does not define the step (a bug, a syntax error)
        problems["<step>"] = f"its recorded source cannot be executed ({type(exc).__name__}: {exc})"
        return _failing(step, problems["<step>"])


def _parameters(func: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return set()


def _options(recorded: Mapping[str, Any], step: StepProvenance) -> StepOptions:
    """The step's options as recorded, less what a reproduction does not repeat: it asks
    no person at a gate, and its tolerances are the record's."""
    known = {"retries", "retry_delay", "timeout", "cache", "version", "inputs"}
    known |= {"track_reads", "copy_inputs"}
    values = {k: v for k, v in recorded.items() if k in known}
    if "inputs" in values:
        values["inputs"] = tuple(values["inputs"])
    return StepOptions(**values, reproduce_rtol=step.rtol, reproduce_atol=step.atol)


def _caused_by(exc: BaseException, kinds: Any) -> bool:
    """Whether ``exc``, or an exception it was raised from, is one of ``kinds``."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return False
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _why(name: str, entry: Mapping[str, Any], exc: BaseException) -> str:
    kind = entry.get("kind")
    text = f"{type(exc).__name__}: {exc}"
    if kind in ("import", "from") and isinstance(exc, ImportError | AttributeError):
        where = entry.get("module")
        return f"{name!r} comes from {where!r}, which cannot be imported here ({text})"
    if kind == "data":
        from nbflow.errors import UntrustedStoreError

        if isinstance(exc, UntrustedStoreError):
            return (
                f"the value of {name!r} is pickled and the store is not trusted "
                "(opened with trust=False): open it with trust=True to reproduce this step"
            )
        if _caused_by(exc, ImportError | AttributeError):
            return (
                f"the value of {name!r} is a pickled object whose code is no longer "
                f"importable ({text})"
            )
        return f"the stored value of {name!r} cannot be loaded ({text})"
    return f"{name!r} ({kind}) cannot be defined again from its recorded source ({text})"
