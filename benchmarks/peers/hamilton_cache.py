"""Apache Hamilton with caching: the steps as a module, a driver ``.with_cache()``
(1.89 removed Hamilton's telemetry: nothing leaves the machine; hence the extra's pin).

Hamilton's cache (``Builder().with_cache(path)``) keeps its metadata in a SQLite file
and each result as a pickle file, keyed by the node's source and its inputs' data
versions. The driver is built before the clock (as nbflow's flow is defined before it);
the first run executes every node and stores it; the cached re-run, on the same driver,
finds every node in the cache.
"""

from __future__ import annotations

from benchmarks.peers.protocol import (
    WARM_UP_STEPS,
    PeerArgs,
    Samples,
    add,
    fresh_dir,
    leaves,
    serve,
    step_module,
    topologies,
)
from benchmarks.timing import timed

SYSTEM = "Hamilton with caching"


def measure(args: PeerArgs) -> tuple[str, Samples]:
    from hamilton import driver
    from hamilton.version import VERSION

    samples: Samples = {}
    runs = [("warm", t) for t in topologies(WARM_UP_STEPS)]
    runs += [(f"rep{rep}", t) for rep in range(args.repeats) for t in topologies(args.steps)]
    for label, topology in runs:
        folder = fresh_dir(args.workdir / f"{label}-{topology.name}-{len(topology.steps)}")
        module = step_module(topology, folder, f"hamilton_steps_{label}_{topology.name[:3]}")
        dr = driver.Builder().with_modules(module).with_cache(path=str(folder / "cache")).build()
        final = leaves(topology)
        first_s, first = timed(lambda: dr.execute(final))  # noqa: B023
        cached_s, cached = timed(lambda: dr.execute(final))  # noqa: B023
        if first != cached:
            raise RuntimeError(f"Hamilton's cached re-run returned {cached}, not {first}")
        if label != "warm":
            steps = len(topology.steps)
            add(samples, SYSTEM, topology.name, "first", first_s / steps)
            add(samples, SYSTEM, topology.name, "cached", cached_s / steps)
    return f"apache-hamilton {'.'.join(map(str, VERSION))}", samples


if __name__ == "__main__":
    serve("hamilton", measure)
