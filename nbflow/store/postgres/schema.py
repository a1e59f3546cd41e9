"""The PostgreSQL store's schema, its numbered migrations, and the checks on opening.

The tables mirror the DuckDB store's (same names and columns, so ``store.sql`` queries
read the same), with two differences: values are bytes in ``blob_chunks`` (a DataFrame as
Arrow IPC), never native tables; and identifiers use the "C" collation, so rows sort as
on DuckDB whatever the database's locale.
"""

from __future__ import annotations

from typing import Any

from nbflow.errors import NotAStoreError
from nbflow.store.migrations import FORMAT, parse_version, recording, refuse_newer, require_tables

#: The schema this version of nbflow writes. Newer ones are refused.
SCHEMA_VERSION = 5

#: Bytes per row of ``blob_chunks``: large values are split so no single row (or
#: statement parameter) grows past a few MB.
CHUNK_BYTES = 4 * 1024 * 1024

_ID = 'TEXT COLLATE "C"'

SCHEMA_V1 = f"""
CREATE TABLE nbflow_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE flows (
    name {_ID} NOT NULL,
    fingerprint {_ID} NOT NULL,
    definition JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, fingerprint)
);
CREATE TABLE runs (
    run_id {_ID} PRIMARY KEY,
    flow {_ID} NOT NULL,
    flow_fingerprint {_ID} NOT NULL,
    status {_ID} NOT NULL,
    version BIGINT NOT NULL,
    params JSON NOT NULL,
    steps JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    error TEXT,
    parent_run_id {_ID},
    fork_from_step {_ID},
    fork_from_version BIGINT,
    thread_id {_ID}
);
CREATE INDEX runs_by_creation ON runs (created_at DESC, run_id DESC);
CREATE INDEX runs_by_status ON runs (status);
CREATE TABLE events (
    run_id {_ID} NOT NULL,
    seq BIGINT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    type {_ID} NOT NULL,
    step {_ID},
    attempt INTEGER,
    payload JSON NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE step_executions (
    run_id {_ID} NOT NULL,
    step {_ID} NOT NULL,
    attempt INTEGER NOT NULL,
    flow {_ID} NOT NULL,
    status {_ID} NOT NULL,
    cache_key {_ID},
    output JSON,
    output_hash {_ID},
    inputs JSON,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    duration_ms DOUBLE PRECISION,
    error TEXT,
    traceback TEXT,
    source_run_id {_ID},
    seq BIGINT NOT NULL,
    fingerprint {_ID},
    PRIMARY KEY (run_id, step, attempt)
);
CREATE INDEX step_executions_by_cache_key ON step_executions (flow, fingerprint, cache_key);
CREATE TABLE blobs (
    hash {_ID} PRIMARY KEY,
    codec {_ID} NOT NULL,
    size BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    table_name TEXT,
    meta JSON,
    stored_bytes BIGINT NOT NULL,
    chunks INTEGER NOT NULL
);
CREATE TABLE blob_chunks (
    hash {_ID} NOT NULL REFERENCES blobs (hash) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (hash, idx)
);
CREATE TABLE leases (
    run_id {_ID} PRIMARY KEY,
    token {_ID} NOT NULL,
    pid BIGINT NOT NULL,
    host TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    proc_start BIGINT
);
"""

#: Version 2: runs someone else made (imported or copied without trust), whose outputs
#: are no cache hits until trusted (see :mod:`nbflow.store.untrusted`). The runs an
#: imported pickle's mark names were imported without trust: they are marked too.
UNTRUSTED_RUNS_V2 = f"""
CREATE TABLE untrusted_runs (
    run_id {_ID} PRIMARY KEY,
    source TEXT NOT NULL,
    marked_at TIMESTAMPTZ NOT NULL,
    derived_from {_ID}
);
INSERT INTO untrusted_runs
SELECT run_id, min(source), now(), NULL FROM (
    SELECT (meta::jsonb) #>> '{{untrusted,run_id}}' AS run_id,
           coalesce('imported from ' || ((meta::jsonb) #>> '{{untrusted,imported_from}}'),
                    'copied from ' || ((meta::jsonb) #>> '{{untrusted,copied_from}}'),
                    'marked untrusted') AS source
    FROM blobs WHERE codec = 'pickle' AND jsonb_typeof((meta::jsonb) -> 'untrusted') = 'object'
) AS marks WHERE run_id IN (SELECT run_id FROM runs)
GROUP BY run_id;
"""

#: Version 3: the files each execution declared or read, with their content hashes (see
#: ``nbflow.store.records.FilesRead``); NULL for executions that had none.
FILES_READ_V3 = "ALTER TABLE step_executions ADD COLUMN files JSON;"
#: Version 4: the run parameters each step execution read (a cached or reused one: those
#: of the execution it takes its output from), so a run's record says what each step used.
#: Older rows get them from their step_started event; older cached rows never had them.
STEP_PARAMS_V4 = """
ALTER TABLE step_executions ADD COLUMN params JSON;
UPDATE step_executions AS x SET params = e.payload -> 'params' FROM events e
WHERE x.attempt > 0 AND e.run_id = x.run_id AND e.step = x.step AND e.attempt = x.attempt
  AND e.type = 'step_started';
"""

#: The tenant a session declared (``SET nbflow.tenant``; nbflow sets it when it connects):
#: NULL when none (the owner's view, or a role that sees only runs without a tenant).
_SESSION_TENANT = "nullif(current_setting('nbflow.tenant', true), '')"
#: The session's tenant as text ('' for none), to compare with :func:`nbflow_run_owner`.
_SESSION_KEY = "coalesce(current_setting('nbflow.tenant', true), '')"
_SEES_RUN = "EXISTS (SELECT 1 FROM runs r WHERE r.run_id = {t}.run_id)"
_OWNS_RUN = f"coalesce(nbflow_run_owner({{t}}.run_id), {_SESSION_KEY}) = {_SESSION_KEY}"
_SEES_VALUE = (
    "(EXISTS (SELECT 1 FROM step_executions x WHERE x.output_hash = {t}.hash) "
    "OR NOT nbflow_value_in_use({t}.hash))"
)


def _run_policies(table: str) -> str:
    return (
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n"
        f"CREATE POLICY tenant_read ON {table} FOR SELECT USING ({_SEES_RUN.format(t=table)});\n"
        f"CREATE POLICY tenant_write ON {table} FOR ALL USING ({_OWNS_RUN.format(t=table)}) "
        f"WITH CHECK ({_OWNS_RUN.format(t=table)});\n"
    )


#: Version 5: runs are stamped with their tenant, and the database itself keeps each
#: tenant to its runs (row-level security, see ``docs/tenants.md``). A session sees the
#: runs of the tenant it declared (``nbflow.tenant``) and the runs without one, and
#: changes only its own; rows of runs (events, executions, leases, marks) follow their
#: run; a value is seen by the sessions that see a run using it, or by anyone while no
#: run uses it (it is being written), and no session deletes a value a run still uses.
#: The role owning the tables is not subject to the policies: that is the owner's view.
#: The functions below read as their owner (SECURITY DEFINER), answering only yes/no or
#: a run's tenant, so the policies can ask about rows the session cannot see.
TENANTS_V5 = (
    f"""
ALTER TABLE runs ADD COLUMN tenant {_ID};
CREATE INDEX runs_by_tenant ON runs (tenant);
CREATE INDEX runs_by_flow ON runs (flow, flow_fingerprint);
CREATE INDEX step_executions_by_output ON step_executions (output_hash);
CREATE FUNCTION nbflow_run_owner(id text) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT coalesce(tenant, '') FROM runs WHERE run_id = id $$;
CREATE FUNCTION nbflow_value_in_use(h text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT EXISTS (SELECT 1 FROM step_executions WHERE output_hash = h) $$;
CREATE FUNCTION nbflow_value_stored(h text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT EXISTS (SELECT 1 FROM blobs WHERE hash = h) $$;
CREATE FUNCTION nbflow_flow_in_use(n text, f text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT EXISTS (SELECT 1 FROM runs WHERE flow = n AND flow_fingerprint = f) $$;
CREATE FUNCTION nbflow_values_in_use(hashes text[], excluding text[]) RETURNS SETOF text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT h FROM unnest(hashes) AS h WHERE EXISTS (
              SELECT 1 FROM step_executions x
              WHERE x.output_hash = h AND NOT (x.run_id = ANY(excluding)))
          OR EXISTS (SELECT 1 FROM events e
              WHERE NOT (e.run_id = ANY(excluding)) AND strpos(e.payload::text, h) > 0) $$;
CREATE FUNCTION nbflow_runs_executing() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT
    AS $$ SELECT count(*) FROM leases WHERE expires_at > now() $$;
ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON runs FOR SELECT
    USING (tenant IS NULL OR tenant = {_SESSION_TENANT});
CREATE POLICY tenant_write ON runs FOR ALL
    USING (tenant IS NOT DISTINCT FROM {_SESSION_TENANT})
    WITH CHECK (tenant IS NOT DISTINCT FROM {_SESSION_TENANT});
"""
    + "".join(_run_policies(t) for t in ("events", "step_executions", "leases", "untrusted_runs"))
    + f"""
ALTER TABLE blobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON blobs FOR SELECT USING ({_SEES_VALUE.format(t="blobs")});
CREATE POLICY tenant_insert ON blobs FOR INSERT WITH CHECK (true);
CREATE POLICY tenant_update ON blobs FOR UPDATE USING ({_SEES_VALUE.format(t="blobs")})
    WITH CHECK (true);
CREATE POLICY tenant_delete ON blobs FOR DELETE USING (NOT nbflow_value_in_use(hash));
ALTER TABLE blob_chunks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON blob_chunks FOR SELECT
    USING (EXISTS (SELECT 1 FROM blobs b WHERE b.hash = blob_chunks.hash));
CREATE POLICY tenant_insert ON blob_chunks FOR INSERT WITH CHECK (true);
CREATE POLICY tenant_delete ON blob_chunks FOR DELETE USING (NOT nbflow_value_in_use(hash));
ALTER TABLE flows ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON flows FOR SELECT USING (
    EXISTS (SELECT 1 FROM runs r WHERE r.flow = flows.name
            AND r.flow_fingerprint = flows.fingerprint)
    OR NOT nbflow_flow_in_use(name, fingerprint));
CREATE POLICY tenant_insert ON flows FOR INSERT WITH CHECK (true);
"""
)

#: The tables of the current schema.
TABLES = (
    "nbflow_meta",
    "schema_migrations",
    "flows",
    "runs",
    "events",
    "step_executions",
    "blobs",
    "blob_chunks",
    "leases",
    "untrusted_runs",
)

#: Numbered migrations: (version, name, DDL). Version 1 creates the schema.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial schema", SCHEMA_V1),
    (2, "untrusted runs", UNTRUSTED_RUNS_V2),
    (3, "files read by each execution", FILES_READ_V3),
    (4, "the parameters each step read", STEP_PARAMS_V4),
    (5, "runs stamped with their tenant, kept apart by row-level security", TENANTS_V5),
]

#: Serialises first opens (and migrations) of one schema by several processes.
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('nbflow schema ' || current_schema()))"


def setup(con: Any, where: str) -> None:
    """Create or migrate the schema in the connection's current schema, in one
    transaction; refuse schemas of other programs and newer nbflow schemas.

    ``con`` is an autocommit psycopg connection whose ``search_path`` is set.
    """
    with con.transaction():
        current = con.execute("SELECT current_schema()").fetchone()[0]
        if current is None:
            raise NotAStoreError(
                f"{where} has no schema to create the store in (none of its search_path "
                "exists). Give one with '?schema=NAME'."
            )
        version = stored_version(con, where, current)
        refuse_newer(where, version, SCHEMA_VERSION)
        if version == SCHEMA_VERSION:
            return
        con.execute(_LOCK_SQL)
        # Another process may have created (or migrated) it while we waited for the lock.
        version = stored_version(con, where, current) or 0
        for number, name, ddl in MIGRATIONS:
            if number <= version:
                continue
            con.execute(ddl)
            for statement, params in recording(number, name, "%s"):
                con.execute(statement, params)


def stored_version(con: Any, where: str, schema: str) -> int | None:
    """The nbflow schema version in ``schema``; None when it holds no tables.

    Raises NotAStoreError for a schema holding other tables but no nbflow marker.
    """
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        [schema],
    ).fetchall()
    tables = {r[0] for r in rows}
    if not tables:
        return None
    if "nbflow_meta" not in tables:
        raise NotAStoreError(
            f"{where} is a PostgreSQL database but its schema {schema!r} is not an nbflow "
            f"store (it has tables {', '.join(sorted(tables)[:5])}). Use another database, "
            "or another schema with '?schema=NAME'."
        )
    meta = dict(con.execute("SELECT key, value FROM nbflow_meta").fetchall())
    if meta.get("format") != FORMAT:
        raise NotAStoreError(f"{where} is not an nbflow store (no nbflow format marker).")
    version = parse_version(where, meta)
    if version == SCHEMA_VERSION:
        require_tables(where, tables, TABLES)
    return version
