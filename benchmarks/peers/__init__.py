"""nbflow side by side with its peers, every figure measured in this run.

Each system runs in a process of its own (``python -m benchmarks.peers.<module>``, one
JSON line back on stdout: :mod:`benchmarks.peers.protocol`) on the same 200-step chain
and 200-wide fan-out of tiny int steps (:mod:`benchmarks.overhead`):

* the floors, :mod:`~benchmarks.peers.raw_commits`: a raw DuckDB insert+commit and a raw
  SQLite WAL ``synchronous=FULL`` commit per step;
* :mod:`~benchmarks.peers.joblib_memory`, :mod:`~benchmarks.peers.hamilton_cache`,
  :mod:`~benchmarks.peers.dbos_sqlite`: joblib.Memory, Hamilton with caching, DBOS on
  SQLite (each only if installed: ``pip install -e '.[bench]'``);
* :mod:`~benchmarks.peers.nbflow_modes`: nbflow in each durability mode.

The processes take turns round by round (each round runs every system once, each run
``repeats`` repetitions), so a shared machine's drifting load falls on all of them; the
table shows medians over every round.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.overhead import STEPS
from benchmarks.peers.protocol import Samples

PEER_TIMEOUT_S = 600
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Peer:
    """One process to start: its module, the systems it measures, extra arguments."""

    module: str
    systems: tuple[str, ...]
    args: tuple[str, ...] = ()


PEERS = (
    Peer("raw_commits", ("raw DuckDB insert+commit", "raw SQLite WAL FULL commit")),
    Peer("joblib_memory", ("joblib.Memory",)),
    Peer("hamilton_cache", ("Hamilton with caching",)),
    Peer("dbos_sqlite", ("DBOS (SQLite)",)),
    *(Peer("nbflow_modes", (f"nbflow {m}",), ("--mode", m)) for m in ("sync", "async", "exit")),
)


@dataclass
class PeersResult:
    """Seconds per step of every sample, by system, topology and kind (first, cached)."""

    steps: int
    rounds: int
    repeats: int
    systems: list[str] = field(default_factory=list)
    samples: Samples = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # system -> why no figure
    elapsed_s: float = 0.0

    @property
    def description(self) -> str:
        """One line for the stage's header."""
        versions = sorted(set(self.versions.values()))
        return (
            f"side by side: a {self.steps}-step chain and a {self.steps}-wide fan-out of tiny "
            f"int steps, each system in its own process, {self.rounds} round(s) x "
            f"{self.repeats} repetition(s) (medians); first run into fresh files (driver "
            "built, DBOS launched, store opened before the clock), cached = the same run "
            f"again; {', '.join(versions)}; {self.elapsed_s:.0f} s"
        )

    def add(self, samples: Samples) -> None:
        """Merge one process's samples."""
        for system, by_topology in samples.items():
            for topology, by_kind in by_topology.items():
                for kind, values in by_kind.items():
                    mine = self.samples.setdefault(system, {}).setdefault(topology, {})
                    mine.setdefault(kind, []).extend(values)


def run_peer(peer: Peer, workdir: Path, steps: int, repeats: int) -> dict[str, Any]:
    """Start the peer's process and return its JSON answer; RuntimeError if it fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", f"benchmarks.peers.{peer.module}", *peer.args]
    command += ["--steps", str(steps), "--repeats", str(repeats), "--workdir", str(workdir)]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=PEER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer within {PEER_TIMEOUT_S} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exit code {done.returncode}: {tail[:300]}")
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


def run_peers(
    workdir: Path,
    rounds: int,
    repeats: int,
    steps: int = STEPS,
    log: Callable[[str], None] = print,
) -> PeersResult:
    """Every peer, ``rounds`` times in turn; a peer that is missing or fails is noted
    (its rows say so) and not started again."""
    started = time.perf_counter()
    result = PeersResult(steps, rounds, repeats, [s for p in PEERS for s in p.systems])
    for round_ in range(rounds):
        log(f"  side by side: round {round_ + 1}/{rounds}")
        for peer in PEERS:
            if all(s in result.unavailable for s in peer.systems):
                continue
            folder = workdir / f"peer-{peer.module}-{'-'.join(peer.args) or 'all'}-{round_}"
            try:
                answer = run_peer(peer, folder, steps, repeats)
            except RuntimeError as exc:
                log(f"    {', '.join(peer.systems)}: failed: {exc}")
                result.unavailable.update({s: f"failed: {exc}" for s in peer.systems})
                continue
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            if "missing" in answer:
                result.unavailable.update(
                    {s: f"not installed ({answer['missing']})" for s in peer.systems}
                )
            elif "unsupported" in answer:
                result.unavailable.update({s: answer["unsupported"] for s in peer.systems})
            else:
                result.add(answer["samples"])
                result.versions.update({s: answer["version"] for s in peer.systems})
    result.elapsed_s = time.perf_counter() - started
    return result
