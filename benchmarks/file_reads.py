"""The cost of recording the files a step reads: a step that opens 1,000 files.

The step ``json.load``s each of 1,000 small JSON files (about 1 KB each, in the page
cache), as a step that reads a folder of records does. It runs as the engine runs it
(a ``StepTask``). An audit hook cannot be removed, so the step without it is measured in
processes that never install it, alternating with processes that do (``python -m
benchmarks.file_reads MODE REPEATS FOLDER``, a few repetitions each, round after round):

* *no hook*: the step alone, before any step was recorded in the process;
* *hook idle*: the hook installed (it is, for good, once one step was recorded) but this
  step not recorded (``track_reads=False``): what every audit event then costs;
* *recording*: the hook noting the step's 1,000 opens, without hashing them: the cost of
  the audit hook, the issue's target (<= 5% of the step's time);
* *recorded and hashed*: what ``flow.run`` does, the opens noted and every file read
  hashed once the step returns; *warm* when each file's hash is known from an earlier run
  (a ``stat`` per file), *cold* when none is (each file read again);
* *cache-hit check*: before reusing the step's output, a later run hashes the 1,000
  recorded files again (warm: a ``stat`` each).

The variants of the hooked processes are measured interleaved, repetition by repetition,
and the no-hook processes make the same pattern of calls. Times are the process's CPU time
(user + system), so that other work on the machine does not blur a 5% difference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import Quantity, Row
from benchmarks.timing import median

FILES = 1_000
MAX_HOOK_RATIO = 1.05  # recording the opens: at most 5% of the step's time

VARIANTS = ("no_hook", "hook_idle", "recording", "hashed_warm", "hashed_cold", "hit_check")


@dataclass(frozen=True)
class FileReadsResult:
    """Seconds per repetition of each variant."""

    files: int
    seconds: dict[str, list[float]]

    @property
    def description(self) -> str:
        """One line for the report."""
        reps = len(self.seconds["no_hook"])
        return (
            f"file reads: a step json.loading {self.files:,} files of ~1 KB (page cache), run "
            f"as a StepTask; CPU time, median of {reps}, in processes without the hook "
            "alternating with processes with it"
        )


# -- in the child process -------------------------------------------------------------------


def make_files(folder: Path, files: int) -> list[str]:
    """``files`` small JSON files under ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = folder / f"record-{i:05d}.json"
        path.write_text(json.dumps({"id": i, "values": list(range(100)), "name": f"r{i}"}))
        paths.append(str(path))
    return paths


def measure_child(mode: str, repeats: int, folder: Path) -> dict[str, list[float]]:
    """Seconds of the variants of ``mode`` (``plain``: no hook; ``hooked``: the rest),
    measured in this process."""
    from nbflow.engine import files as file_hashing
    from nbflow.engine import reads
    from nbflow.engine.executors import StepTask
    from nbflow.store.records import CacheHit, CacheHits, FilesRead
    from nbflow.values.refs import Codec, ValueRef

    paths = sorted(str(p) for p in folder.iterdir())
    files = len(paths)

    def step() -> int:
        total = 0
        for path in paths:
            with open(path) as f:
                total += json.load(f)["id"]
        return total

    spec = reads.ReadSpec()
    plain = StepTask("records", step, {}, None)
    recorded = StepTask("records", step, {}, None, reads=spec)

    def hook_only() -> None:
        with reads.recording(spec) as seen:
            plain.func()
        assert len(seen.opened) >= files

    def cold() -> None:
        file_hashing.forget_hashes()
        outcome = recorded()
        assert outcome.files_read is not None and len(outcome.files_read) == files

    read = {p: file_hashing.file_hash(p) for p in paths}
    key = "lookup-key"
    full = file_hashing.reads_key(key, read)
    ref = ValueRef(Codec.JSON, "0" * 32, 1, "int", 1)
    hits = CacheHits({full: CacheHit(full, ref, "run", None, FilesRead(key, read))})

    def hit_check() -> None:
        from nbflow.engine.cache import find_hit

        assert find_hit(hits, key) is not None

    runs: dict[str, Callable[[], Any]] = {
        "hook_idle": plain,
        "recording": hook_only,
        "hashed_warm": recorded,
        "hashed_cold": cold,
        "hit_check": hit_check,
    }
    seconds: dict[str, list[float]] = {}
    for _ in range(3):  # the same warm-up in both kinds of process
        plain()
    if mode == "plain":
        # The same pattern of calls as the hooked process makes, each one the plain step.
        seconds["no_hook"] = [_time(plain) for _ in range(repeats * (1 + len(runs)))]
        assert not reads._INSTALLED, "the hook was installed in the no-hook process"
        return seconds
    seconds = {name: [] for name in runs}
    recorded()  # installs the hook; every file's hash is known from here on
    for _ in range(repeats):
        for name, call in runs.items():
            seconds[name].append(_time(call))
    return seconds


def _time(call: Callable[[], Any]) -> float:
    # CPU time of this process (user + system): what the hook and the hashing cost,
    # unaffected by other processes that share the machine's cores.
    began = time.process_time()
    call()
    return time.process_time() - began


# -- in the benchmark run ---------------------------------------------------------------------


def run_file_reads(
    workdir: Path,
    rounds: int,
    files: int = FILES,
    repeats: int = 3,
    log: Callable[[str], None] = print,
) -> FileReadsResult:
    """Measure ``rounds`` rounds of a process without the hook then one with it, each
    timing ``repeats`` repetitions of its variants."""
    folder = Path(tempfile.mkdtemp(prefix="file-reads-", dir=workdir))
    make_files(folder, files)
    log(f"  {files:,} files, {rounds} rounds of {repeats} repetitions")
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for mode in ("plain", "hooked"):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.file_reads", mode, str(repeats), str(folder)],
                check=True,
                capture_output=True,
                text=True,
            )
            for name, values in json.loads(out.stdout.strip().splitlines()[-1]).items():
                seconds[name] += values
    return FileReadsResult(files, seconds)


def file_reads_rows(result: FileReadsResult) -> list[Row]:
    """The table rows: each variant against the step without the hook."""
    base = median(result.seconds["no_hook"])
    reference = Quantity(base, "s")
    label = f"step opening {result.files:,} files"
    rows = [Row(f"{label}, no hook", reference, show_ratio=False)]
    for name, what in (
        ("hook_idle", "hook installed, step not recorded"),
        ("recording", "audit hook recording its opens"),
        ("hashed_warm", "recorded + hashed, hashes known"),
        ("hashed_cold", "recorded + hashed, first time"),
    ):
        value = median(result.seconds[name])
        target = met = None
        if name == "recording":
            target, met = f"<= {MAX_HOOK_RATIO:.2f}x", value <= MAX_HOOK_RATIO * base
        rows.append(
            Row(
                f"{label}, {what}",
                Quantity(value, "s"),
                "no hook",
                reference,
                target or "",
                met,
            )
        )
    check = median(result.seconds["hit_check"])
    rows.append(
        Row(
            f"cache-hit check of {result.files:,} recorded files",
            Quantity(check, "s"),
            "the step, no hook",
            reference,
        )
    )
    return rows


def main(argv: list[str]) -> None:
    """Child entry point: ``MODE REPEATS FOLDER``; prints the seconds as JSON."""
    mode, repeats, folder = argv[0], int(argv[1]), Path(argv[2])
    print(json.dumps(measure_child(mode, repeats, folder)))


if __name__ == "__main__":
    main(sys.argv[1:])
