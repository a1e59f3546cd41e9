"""nbflow's benchmarks: ``make bench`` (``python -m benchmarks``).

Everything is measured side by side in one process run, each nbflow number next to the
floor or reference it should be judged against:

* :mod:`benchmarks.overhead` - per-step cost of a 200-step chain and a 200-step fan-out
  (first run, every step durable; and a fully cached re-run), against plain Python and a
  raw DuckDB ``INSERT`` + ``COMMIT`` per step;
* :mod:`benchmarks.dataframes` - a large DataFrame checkpoint written and read back,
  against pickle and against DuckDB's own Arrow ingest and export;
* :mod:`benchmarks.report` - the table of medians, ratios and targets, and the JSON dump;
* :mod:`benchmarks.profiling` - where one chain run spends its time (``--profile``).
"""
