"""Why a reader waits for the DuckDB writers: who holds the file, and for how long.

Not a stage of ``make bench``: a diagnostic, ``python -m benchmarks.lock_holds [--runs N]
[--writers W]``. It runs the writers and the reader of :mod:`benchmarks.postgres` on one
DuckDB file, each process instrumented (by wrapping the store's private
``connect_waiting`` and ``_disconnect``, so it follows the store's code as it is) to log
every time it got the file, after how long a wait and how many tries, and when it gave it
back. Then it prints how long each kind of process held the file and waited for it, the
timeline of holds, and, in one writer alone, how much of a run the store's lock is held
(the background check that gives the file to a waiter can only take it between two
operations, so that share decides how soon a holder yields).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.postgres import READER, READER_PAUSE_S, WRITER, WRITER_STEPS, WRITERS

ROOT = Path(__file__).resolve().parents[1]

INSTRUMENT = textwrap.dedent(
    """
    import atexit, json, os, sys, time
    import nbflow.store.duckdb.store as _store

    _LOG, _ROLE, _OUT = [], os.environ["HOLDS_ROLE"], os.environ["HOLDS_OUT"]
    _connect_waiting = _store.connect_waiting

    def _counted(connect, path, timeout):
        began, tries = time.time(), [0]

        def attempt():
            tries[0] += 1
            return connect()

        con = _connect_waiting(attempt, path, timeout)
        _LOG.append({"ev": "got", "waited_from": began, "t": time.time(), "tries": tries[0]})
        return con

    _store.connect_waiting = _counted
    _disconnect = _store.DuckDBStore._disconnect

    def _logged(self):
        had = self._conn is not None
        _disconnect(self)
        if had:
            _LOG.append({"ev": "released", "t": time.time()})

    _store.DuckDBStore._disconnect = _logged

    @atexit.register
    def _dump():
        with open(os.path.join(_OUT, f"{_ROLE}-{os.getpid()}.json"), "w") as fh:
            json.dump({"role": _ROLE, "log": _LOG}, fh)
    """
)


def _holds(folder: Path) -> list[dict[str, Any]]:
    """Every hold of the file: role, start, end, the wait before it, the tries."""
    holds = []
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text())
        got = None
        for event in data["log"]:
            if event["ev"] == "got":
                got = event
            elif got is not None:
                holds.append(
                    {
                        "role": data["role"],
                        "start": got["t"],
                        "end": event["t"],
                        "waited": got["t"] - got["waited_from"],
                        "tries": got["tries"],
                    }
                )
                got = None
    return sorted(holds, key=lambda h: h["start"])


def contended(
    workdir: Path, runs: int, writers: int, reader: bool = True
) -> tuple[float, list[dict[str, Any]]]:
    """Run ``writers`` writers (and the reader) on one file: the seconds from the start
    signal until the writers are done, and every hold they logged."""
    import nbflow as nf

    store, logs = workdir / "holds.duckdb", workdir / "logs"
    logs.mkdir()
    nf.open_store(store).close()
    (workdir / "writer.py").write_text(INSTRUMENT + WRITER)
    (workdir / "reader.py").write_text(INSTRUMENT + READER)
    go, stop = workdir / "go", workdir / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOLDS_OUT": str(logs)}

    def start(script: str, role: str, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(workdir / script), *args],
            stdout=subprocess.PIPE,
            text=True,
            env={**env, "HOLDS_ROLE": role},
        )

    procs = [
        start(
            "writer.py", f"writer{p}", [str(store), str(p), str(runs), str(WRITER_STEPS), str(go)]
        )
        for p in range(writers)
    ]
    if reader:
        procs.append(
            start("reader.py", "reader", [str(store), str(go), str(stop), str(READER_PAUSE_S)])
        )
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a process did not start")
    started = time.monotonic()
    go.write_text("go")
    for proc in procs[:writers]:
        proc.communicate(timeout=900)
    elapsed = time.monotonic() - started
    stop.write_text("stop")
    for proc in procs[writers:]:
        proc.communicate(timeout=300)
    return elapsed, _holds(logs)


def lock_share(workdir: Path, runs: int = 50) -> tuple[float, float, list[bool]]:
    """In one writer alone: the share of its runs' time the store's lock is held, the
    median gap between two holds (seconds), and whether each of the background
    check's 0.1 s probes found it free."""
    from benchmarks.overhead import build_flow, chain

    flow = build_flow("holds", workdir / "alone.duckdb", chain(WRITER_STEPS).steps)
    flow.run(progress=False)
    store: Any = flow.store
    lock, spans, depth = store._lock, [], [0, 0.0]
    original_acquire, original_release = lock.acquire, lock.release

    class Tracked:
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            ok = original_acquire(blocking, timeout)
            if ok:
                if depth[0] == 0:
                    depth[1] = time.perf_counter()
                depth[0] += 1
            return bool(ok)

        def release(self) -> None:
            depth[0] -= 1
            if depth[0] == 0:
                spans.append((depth[1], time.perf_counter()))
            original_release()

        __enter__ = acquire

        def __exit__(self, *exc: object) -> None:
            self.release()

    store._lock = Tracked()
    probes: list[bool] = []
    done = threading.Event()

    def probe() -> None:
        while not done.wait(0.1):
            free = original_acquire(False)
            if free:
                original_release()
            probes.append(bool(free))

    thread = threading.Thread(target=probe, daemon=True)
    started = time.perf_counter()
    thread.start()
    for _ in range(runs):
        flow.run(progress=False, force=True)
    done.set()
    thread.join()
    elapsed = time.perf_counter() - started
    store._lock = lock
    store.close()
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    held = sum(end - begin for begin, end in spans)
    return held / elapsed, statistics.median(gaps), probes


def report(holds: list[dict[str, Any]], timeline: bool) -> list[str]:
    """The summary (and the timeline), as lines."""
    t0 = min(h["start"] - h["waited"] for h in holds)
    lines = []
    for kind in ("writer", "reader"):
        mine = [h for h in holds if h["role"].startswith(kind)]
        if not mine:
            continue
        held = [h["end"] - h["start"] for h in mine]
        waited = [h["waited"] for h in mine]
        lines.append(
            f"{kind}s: {len(mine)} holds, held median {statistics.median(held):.3f} s, "
            f"max {max(held):.3f} s; waited median {statistics.median(waited):.3f} s, "
            f"max {max(waited):.3f} s"
        )
    ordered = sorted(holds, key=lambda h: h["start"])
    idle = [max(b["start"] - a["end"], 0.0) for a, b in itertools.pairwise(ordered)]
    span = ordered[-1]["end"] - ordered[0]["start"]
    if idle:
        lines.append(
            f"the file held by nobody between two holds: median {statistics.median(idle):.3f} s, "
            f"max {max(idle):.3f} s, {sum(idle):.2f} s of {span:.2f} s in all"
        )
    kept = []  # per hold: how long it kept the file after another process began waiting
    for h in ordered:
        asked = [  # the moments within h at which another process (began to) wait
            max(h["start"], o["start"] - o["waited"])
            for o in ordered
            if o is not h and o["start"] - o["waited"] < h["end"] and o["start"] > h["start"]
        ]
        if asked:
            kept.append(h["end"] - min(asked))
    if kept:
        lines.append(
            f"a holder kept the file after another process asked for it: median "
            f"{statistics.median(kept):.3f} s, max {max(kept):.3f} s ({len(kept)} holds)"
        )
    if not timeline:
        return lines
    lines.append("timeline (seconds from the first wait): who, got the file at, held, waited")
    for h in holds:
        lines.append(
            f"  {h['role']:8s} {h['start'] - t0:7.3f}  held {h['end'] - h['start']:6.3f}"
            f"  waited {h['waited']:6.3f}  ({h['tries']} tries)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each writer")
    parser.add_argument("--writers", type=int, default=WRITERS)
    parser.add_argument("--no-reader", action="store_true", help="the writers alone")
    parser.add_argument("--timeline", action="store_true", help="also print every hold")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nbflow-holds-") as tmp:
        share, gap, probes = lock_share(Path(tmp))
        print(
            f"one writer alone: the store's lock is held {share:.0%} of its runs' time, "
            f"median gap between two holds {gap * 1e3:.2f} ms; {sum(probes)} of "
            f"{len(probes)} probes 0.1 s apart found it free",
            flush=True,
        )
        elapsed, holds = contended(Path(tmp), args.runs, args.writers, not args.no_reader)
        runs = args.runs * args.writers
        print(f"{runs} runs of {args.writers} writers in {elapsed:.2f} s ({runs / elapsed:.1f}/s)")
        for line in report(holds, args.timeline):
            print(line)
    print(f"1-min load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
