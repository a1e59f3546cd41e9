"""nbflow's benchmarks: ``make bench`` (``python -m benchmarks``).

Everything is measured side by side in one run, each nbflow number next to the floor or
peer it should be judged against, each stage's table printed as soon as it ends
(:mod:`benchmarks.stages`), a summary of every target at the end:

* :mod:`benchmarks.peers` - per-step cost of a 200-step chain and a 200-wide fan-out
  (first run, every step durable; and a cached re-run) for nbflow in each durability
  mode, Hamilton with caching, DBOS on SQLite, joblib.Memory, and the floors (a raw DuckDB
  insert+commit, a raw SQLite WAL FULL commit per step), each in its own process;
* :mod:`benchmarks.frames_pipeline` - 4 steps each making a 1 GB DataFrame from the one
  before: the run's wall time against the steps' compute alone, in each mode;
* :mod:`benchmarks.data_globals` - a cached re-run whose steps read big globals;
* :mod:`benchmarks.dataframes` - a large DataFrame checkpoint written and read back,
  against pickle and against DuckDB's own Arrow ingest and export;
* :mod:`benchmarks.fork` - forking a run with 1 MB vs 1 GB upstream;
* :mod:`benchmarks.postgres` - PostgreSQL beside DuckDB; 4 writer processes at once, and
  how long a 5th process that reads the store waits;
* :mod:`benchmarks.executors` - threads, processes, Dask;
* :mod:`benchmarks.memory` - peak memory while one run checkpoints a 1 GB output (bytes,
  an array, a DataFrame, a pickled object), each in a fresh process, against the output's
  size;
* :mod:`benchmarks.storage` - a small DataFrame's cost on disk and 2,000 runs of a small
  flow (file size, and time per run at run 20 against run 2,000);
* :mod:`benchmarks.file_reads`, :mod:`benchmarks.dag_svg` - the audit hook, the DAG SVG;
* :mod:`benchmarks.report` - the rows, the table format and the JSON dump;
* :mod:`benchmarks.profiling` - where one chain run spends its time (``--profile``).
"""
