"""joblib.Memory: each step a ``memory.cache``-wrapped function in a fresh cache folder.

The first run calls every step (each call pickles its output into a file, never
fsynced); the cached re-run calls them again with the same inputs, so each is a hit
(its output read back from its file).
"""

from __future__ import annotations

from benchmarks.peers.protocol import (
    WARM_UP_STEPS,
    PeerArgs,
    Samples,
    add,
    call_in_order,
    fresh_dir,
    serve,
    step_module,
    topologies,
)
from benchmarks.timing import timed

SYSTEM = "joblib.Memory"


def measure(args: PeerArgs) -> tuple[str, Samples]:
    import joblib

    samples: Samples = {}
    runs = [("warm", t) for t in topologies(WARM_UP_STEPS)]
    runs += [(f"rep{rep}", t) for rep in range(args.repeats) for t in topologies(args.steps)]
    for label, topology in runs:
        folder = fresh_dir(args.workdir / f"{label}-{topology.name}-{len(topology.steps)}")
        module = step_module(topology, folder, f"joblib_steps_{label}_{topology.name[:3]}")
        memory = joblib.Memory(folder / "cache", verbose=0)
        functions = {spec.name: memory.cache(getattr(module, spec.name)) for spec in topology.steps}
        first_s, _ = timed(lambda: call_in_order(topology, functions))  # noqa: B023
        cached_s, _ = timed(lambda: call_in_order(topology, functions))  # noqa: B023
        if label != "warm":
            steps = len(topology.steps)
            add(samples, SYSTEM, topology.name, "first", first_s / steps)
            add(samples, SYSTEM, topology.name, "cached", cached_s / steps)
    return f"joblib {joblib.__version__}", samples


if __name__ == "__main__":
    serve("joblib", measure)
