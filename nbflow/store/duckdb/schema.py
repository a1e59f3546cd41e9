"""The DuckDB store's schema, as one DDL block, and its numbered migrations."""

from __future__ import annotations

import duckdb

from nbflow.errors import NotAStoreError, ReadOnlyStoreError
from nbflow.store.duckdb.read_only import is_read_only
from nbflow.store.migrations import FORMAT, parse_version, recording, refuse_newer, require_tables

#: The schema this version of nbflow writes. Files from a newer schema are refused.
SCHEMA_VERSION = 9

#: Where DataFrame values live as native tables (``nbflow_values.v_<hash>``).
VALUES_SCHEMA = "nbflow_values"

SCHEMA_V1 = f"""
CREATE TABLE nbflow_meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE flows (
    name VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    definition JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, fingerprint)
);
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    flow VARCHAR NOT NULL,
    flow_fingerprint VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    version BIGINT NOT NULL,
    params JSON NOT NULL,
    steps JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    error VARCHAR,
    parent_run_id VARCHAR,
    fork_from_step VARCHAR,
    fork_from_version BIGINT,
    thread_id VARCHAR
);
CREATE TABLE events (
    run_id VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    type VARCHAR NOT NULL,
    step VARCHAR,
    attempt INTEGER,
    payload JSON NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE step_executions (
    run_id VARCHAR NOT NULL,
    step VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    flow VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    cache_key VARCHAR,
    output JSON,
    output_hash VARCHAR,
    inputs JSON,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    duration_ms DOUBLE,
    error VARCHAR,
    traceback VARCHAR,
    source_run_id VARCHAR,
    seq BIGINT NOT NULL,
    fingerprint VARCHAR,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE TABLE blobs (
    hash VARCHAR PRIMARY KEY,
    codec VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    table_name VARCHAR,
    meta JSON,
    data BLOB
);
CREATE SCHEMA {VALUES_SCHEMA};
"""

#: Version 2: who advances each running run (see :mod:`nbflow.store.leases`).
LEASES_V2 = """
CREATE TABLE leases (
    run_id VARCHAR PRIMARY KEY,
    token VARCHAR NOT NULL,
    pid INTEGER NOT NULL,
    host VARCHAR NOT NULL,
    proc_start BIGINT,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"""

#: Version 3: a run's version is the seq of its last event (see DESIGN), so ``runs`` is
#: a view of ``run_records`` (written when a run's status changes) and the events: a
#: step's commit no longer updates a row per step (an UPDATE costs ~1 ms here).
RUNS_VIEW_V3 = """
CREATE TABLE run_records (
    run_id VARCHAR PRIMARY KEY,
    flow VARCHAR NOT NULL,
    flow_fingerprint VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    params JSON NOT NULL,
    steps JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    error VARCHAR,
    parent_run_id VARCHAR,
    fork_from_step VARCHAR,
    fork_from_version BIGINT,
    thread_id VARCHAR
);
INSERT INTO run_records SELECT * EXCLUDE (version) FROM runs;
DROP TABLE runs;
CREATE VIEW runs AS
SELECT r.run_id, r.flow, r.flow_fingerprint, r.status, coalesce(v.version, 0) AS version,
       r.params, r.steps, r.created_at, r.started_at, r.finished_at, r.error,
       r.parent_run_id, r.fork_from_step, r.fork_from_version, r.thread_id
FROM run_records r
LEFT JOIN (SELECT run_id, max(seq) AS version FROM events GROUP BY run_id) v
    ON v.run_id = r.run_id;
"""

#: Version 4: runs someone else made (imported or copied without trust), whose outputs
#: are no cache hits until trusted (see :mod:`nbflow.store.untrusted`). The runs an
#: imported pickle's mark names were imported without trust: they are marked too.
UNTRUSTED_RUNS_V4 = """
CREATE TABLE untrusted_runs (
    run_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    marked_at TIMESTAMPTZ NOT NULL,
    derived_from VARCHAR
);
INSERT INTO untrusted_runs
SELECT run_id, min(source), now(), NULL FROM (
    SELECT json_extract_string(meta, '$.untrusted.run_id') AS run_id,
           coalesce('imported from ' || json_extract_string(meta, '$.untrusted.imported_from'),
                    'copied from ' || json_extract_string(meta, '$.untrusted.copied_from'),
                    'marked untrusted') AS source
    FROM blobs WHERE codec = 'pickle' AND json_type(meta, '$.untrusted') = 'OBJECT'
) WHERE run_id IN (SELECT run_id FROM run_records)
GROUP BY run_id;
"""

#: Version 5: the layouts of :mod:`nbflow.store.duckdb.blobs`. Large bytes live in a table
#: of 8-byte words named after their hash (``data`` is NULL), small DataFrames as Arrow
#: IPC in ``data`` (no table). The rows of older files are read as they are; an older
#: nbflow could not read the new layouts, so it refuses files of this version.
VALUE_LAYOUTS_V5 = (
    "COMMENT ON TABLE blobs IS 'One row per stored value. Bytes: in data, or when large "
    f"in the table {VALUES_SCHEMA}.v_<hash> (column w: 8-byte words, the first size bytes "
    f"of which are the value). DataFrames: the table {VALUES_SCHEMA}.v_<hash>, or when "
    "small Arrow IPC in data (store.sql shows it as that table).'"
)

#: Version 6: the files each execution declared or read, with their content hashes (see
#: ``nbflow.store.records.FilesRead``); NULL for executions that had none.
FILES_READ_V6 = "ALTER TABLE step_executions ADD COLUMN files JSON;"
#: Version 7: the run parameters each step execution read (a cached or reused one: those
#: of the execution it takes its output from), so a run's record says what each step used.
#: Older rows get them from their step_started event; older cached rows never had them.
STEP_PARAMS_V7 = """
ALTER TABLE step_executions ADD COLUMN params JSON;
UPDATE step_executions SET params = (
    SELECT json_extract(e.payload, '$.params') FROM events e
    WHERE e.run_id = step_executions.run_id AND e.step = step_executions.step
      AND e.attempt = step_executions.attempt AND e.type = 'step_started'
) WHERE attempt > 0;
"""

#: The fields of ``event_log.pending_execution`` and their types (see version 8).
PENDING_FIELDS = (
    '{"attempt": "INTEGER", "flow": "VARCHAR", "status": "VARCHAR", "cache_key": "VARCHAR", '
    '"output": "JSON", "output_hash": "VARCHAR", "inputs": "JSON", "started_at": "TIMESTAMPTZ", '
    '"finished_at": "TIMESTAMPTZ", "duration_ms": "DOUBLE", "error": "VARCHAR", '
    '"traceback": "VARCHAR", "source_run_id": "VARCHAR", "fingerprint": "VARCHAR", '
    '"files": "JSON", "params": "JSON"}'
)

#: Version 8: a step's commit is one statement. DuckDB's cost of a commit grows with the
#: tables and columns it writes (~0.04 ms a column), so a second INSERT (19 columns) and
#: BEGIN/COMMIT tripled it. Now the row of an attempt that a step's event finished rides in
#: that event's row (``event_log.pending_execution``, JSON) and is filed into the typed
#: table ``execution_rows`` by the run's next commit that writes more than events (its
#: end, say). ``step_executions`` is the view of both, ``events`` the view of the log
#: without that column: both read as before.
ONE_STATEMENT_V8 = f"""
ALTER TABLE step_executions RENAME TO execution_rows;
ALTER TABLE events RENAME TO event_log;
ALTER TABLE event_log ADD COLUMN pending_execution JSON;
CREATE VIEW events AS
SELECT run_id, seq, ts, type, step, attempt, payload FROM event_log;
CREATE VIEW pending_executions AS
SELECT run_id, step, x.attempt, x.flow, x.status, x.cache_key, x.output, x.output_hash,
       x.inputs, x.started_at, x.finished_at, x.duration_ms, x.error, x.traceback,
       x.source_run_id, seq, x.fingerprint, x.files, x.params
FROM (SELECT run_id, step, seq, from_json(pending_execution, '{PENDING_FIELDS}') AS x
      FROM event_log WHERE pending_execution IS NOT NULL);
CREATE VIEW step_executions AS
SELECT run_id, step, attempt, flow, status, cache_key, output, output_hash, inputs,
       started_at, finished_at, duration_ms, error, traceback, source_run_id, seq,
       fingerprint, files, params
FROM execution_rows
UNION ALL
SELECT * FROM pending_executions;
"""

#: Version 9: runs are stamped with their tenant (see :mod:`nbflow.store.tenants`); runs
#: from before have none (NULL), and every tenant may read them.
TENANTS_V9 = """
ALTER TABLE run_records ADD COLUMN tenant VARCHAR;
CREATE OR REPLACE VIEW runs AS
SELECT r.run_id, r.flow, r.flow_fingerprint, r.status, coalesce(v.version, 0) AS version,
       r.params, r.steps, r.created_at, r.started_at, r.finished_at, r.error,
       r.parent_run_id, r.fork_from_step, r.fork_from_version, r.thread_id, r.tenant
FROM run_records r
LEFT JOIN (SELECT run_id, max(seq) AS version FROM events GROUP BY run_id) v
    ON v.run_id = r.run_id;
"""

#: Numbered migrations: (version, name, DDL). Version 1 creates the schema.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial schema", SCHEMA_V1),
    (2, "run leases", LEASES_V2),
    (3, "run versions from the events", RUNS_VIEW_V3),
    (4, "untrusted runs", UNTRUSTED_RUNS_V4),
    (5, "large values in tables of words, small frames in their rows", VALUE_LAYOUTS_V5),
    (6, "files read by each execution", FILES_READ_V6),
    (7, "the parameters each step read", STEP_PARAMS_V7),
    (8, "a step's commit in one statement", ONE_STATEMENT_V8),
    (9, "runs stamped with their tenant", TENANTS_V9),
]


#: The tables (and views) of the current schema.
TABLES = (
    "nbflow_meta",
    "schema_migrations",
    "flows",
    "run_records",
    "runs",
    "event_log",
    "events",
    "execution_rows",
    "pending_executions",
    "step_executions",
    "blobs",
    "leases",
    "untrusted_runs",
)


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall()
    return {r[0] for r in rows}


def stored_version(
    con: duckdb.DuckDBPyConnection, where: str, tables: set[str] | None = None
) -> int | None:
    """The schema version of the open database; None for an empty database.

    Raises NotAStoreError for a database that holds other tables but no nbflow marker.
    ``tables``: the database's tables, when the caller has read them already.
    """
    tables = _tables(con) if tables is None else tables
    if not tables:
        return None
    if "nbflow_meta" not in tables:
        raise NotAStoreError(
            f"{where} is a DuckDB database but not an nbflow store (it has tables "
            f"{', '.join(sorted(tables)[:5])}). Use another path for the store."
        )
    rows = dict(con.execute("SELECT key, value FROM nbflow_meta").fetchall())
    if rows.get("format") != FORMAT:
        raise NotAStoreError(f"{where} is not an nbflow store (no nbflow format marker).")
    return parse_version(where, rows)


def setup(con: duckdb.DuckDBPyConnection, where: str) -> None:
    """Create or migrate the schema; refuse foreign files and newer schemas. Idempotent."""
    # Read once: listing the catalog is most of what opening a current file costs here.
    tables = _tables(con)
    version = stored_version(con, where, tables)
    refuse_newer(where, version, SCHEMA_VERSION)
    current = version or 0
    read_only = is_read_only(con)
    if current == SCHEMA_VERSION:
        require_tables(where, tables, TABLES)
        # A compacted copy of the file loses empty schemas: make sure this one is there.
        if not read_only:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {VALUES_SCHEMA}")
    elif read_only:
        raise ReadOnlyStoreError(
            where,
            "opening it" if version is None else f"migrating it from schema {version}",
            "it can only be opened for reading",
        )
    for number, name, ddl in MIGRATIONS:
        if number <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(ddl)
            for statement, params in recording(number, name, "?"):
                con.execute(statement, params)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
