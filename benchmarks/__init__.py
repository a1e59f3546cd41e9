"""nbflow's benchmarks: ``make bench`` (``python -m benchmarks``).

Everything is measured side by side in one process run, each nbflow number next to the
floor or reference it should be judged against:

* :mod:`benchmarks.overhead` - per-step cost of a 200-step chain and a 200-step fan-out
  (first run, every step durable; and a fully cached re-run), against plain Python and a
  raw DuckDB ``INSERT`` + ``COMMIT`` per step;
* :mod:`benchmarks.dataframes` - a large DataFrame checkpoint written and read back,
  against pickle and against DuckDB's own Arrow ingest and export;
* :mod:`benchmarks.memory` - peak memory while one run checkpoints a 1 GB output (bytes,
  an array, a DataFrame, a pickled object), each in a fresh process, against the output's
  size;
* :mod:`benchmarks.storage` - a small DataFrame's cost on disk and 2,000 runs of a small
  flow (file size, time per run), in the store's layout and with every frame a table;
* :mod:`benchmarks.report` - the table of medians, ratios and targets, and the JSON dump;
* :mod:`benchmarks.profiling` - where one chain run spends its time (``--profile``).
"""
