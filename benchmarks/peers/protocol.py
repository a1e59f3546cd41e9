"""What every peer's process shares: its command line, the flows' shapes, its JSON answer.

A peer process is started as ``python -m benchmarks.peers.<module> --steps N --repeats R
--workdir DIR [--mode M]``. It warms up (imports, a 10-step run), then measures ``R``
repetitions of each topology, each in fresh files under ``DIR``, and prints one JSON line
on stdout (the last line; a library's own chatter may come before it)::

    {"version": "1.2.3", "samples": {SYSTEM: {TOPOLOGY: {"first": [s], "cached": [s]}}}}

with seconds per step. A peer whose library is not installed prints
``{"missing": "package"}`` and exits 0 (nbflow in a mode this build lacks:
``{"unsupported": "why"}``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.overhead import STEPS, StepSpec, Topology, chain, fan_out

Samples = dict[str, dict[str, dict[str, list[float]]]]  # system -> topology -> kind -> s/step
WARM_UP_STEPS = 10


@dataclass(frozen=True)
class PeerArgs:
    """The peer process's command line."""

    steps: int
    repeats: int
    workdir: Path
    mode: str


def parse_args(argv: list[str] | None = None) -> PeerArgs:
    """``--steps``, ``--repeats``, ``--workdir`` and (nbflow's) ``--mode``."""
    parser = argparse.ArgumentParser(description="one peer of the side-by-side benchmark")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--mode", default="sync")
    args = parser.parse_args(argv)
    return PeerArgs(args.steps, args.repeats, args.workdir, args.mode)


def topologies(steps: int) -> list[Topology]:
    """The 200-step chain and the 200-wide fan-out of :mod:`benchmarks.overhead`."""
    return [chain(steps), fan_out(steps)]


def annotated_source(spec: StepSpec) -> str:
    """The step's source with ``int`` annotations (Hamilton reads types off the signature)."""
    body = spec.source.splitlines()[1]
    params = ", ".join(f"{name}: int" for name in spec.inputs)
    return f"def {spec.name}({params}) -> int:\n{body}\n"


def step_module(topology: Topology, folder: Path, name: str) -> ModuleType:
    """The topology's steps as a real module file, imported (libraries that read a
    function's source, or key on its module, need one)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text("\n\n".join(annotated_source(spec) for spec in topology.steps))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def call_in_order(topology: Topology, functions: dict[str, Callable[..., Any]]) -> Any:
    """Call each step with its upstream values, in order; the last step's value."""
    values: dict[str, Any] = {}
    for spec in topology.steps:
        values[spec.name] = functions[spec.name](*(values[i] for i in spec.inputs))
    return values[topology.steps[-1].name]


def leaves(topology: Topology) -> list[str]:
    """The steps no other step reads (what a run asks for)."""
    read = {name for spec in topology.steps for name in spec.inputs}
    return [spec.name for spec in topology.steps if spec.name not in read]


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def add(samples: Samples, system: str, topology: str, kind: str, seconds_per_step: float) -> None:
    """Record one sample."""
    samples.setdefault(system, {}).setdefault(topology, {}).setdefault(kind, []).append(
        seconds_per_step
    )


def emit(answer: dict[str, Any]) -> None:
    """The process's answer: one JSON line, last on stdout."""
    sys.stdout.flush()
    print(json.dumps(answer), flush=True)


def serve(requires: str | None, measure: Callable[[PeerArgs], tuple[str, Samples]]) -> None:
    """A peer's ``main``: answer "missing" if ``requires`` is not importable, else
    measure and answer the version and the samples."""
    args = parse_args()
    if requires is not None and importlib.util.find_spec(requires) is None:
        emit({"missing": requires})
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    version, samples = measure(args)
    emit({"version": version, "samples": samples})
