"""On PostgreSQL the database keeps tenants apart (row-level security): a role that does
not own the tables, connected for one tenant, cannot see or change another tenant's rows
through nbflow, through ``store.sql``, or through a plain psycopg connection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from store_backends import postgres_server

import nbflow as nf
from nbflow.errors import StoreError, TenantMismatchError, UnknownRunError
from nbflow.store.postgres.store import PostgresStore


@pytest.fixture
def shared() -> Iterator[dict[str, str]]:
    """A store schema made by its owner, and a second role (not the owner, no superuser)
    granted the use of its tables, as a team would set it up (docs/tenants.md)."""
    server = postgres_server()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    role = f"analyst_{uuid.uuid4().hex[:8]}"
    owner_uri = server.uri(schema=schema)
    PostgresStore(owner_uri).close()  # the owner creates the schema
    admin = psycopg.connect(server.uri(), autocommit=True)
    ident, who = sql.Identifier(schema), sql.Identifier(role)
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(who))
    admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, who))
    for table in ("nbflow_meta", "schema_migrations"):
        admin.execute(
            sql.SQL("GRANT SELECT ON {}.{} TO {}").format(ident, sql.Identifier(table), who)
        )
    tables = ["flows", "runs", "events", "step_executions", "blobs", "blob_chunks"]
    tables += ["leases", "untrusted_runs"]
    for table in tables:
        admin.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {}.{} TO {}").format(
                ident, sql.Identifier(table), who
            )
        )
    base = f"postgresql://{role}@{server.host}:{server.port}/postgres"
    try:
        yield {
            "owner": owner_uri,
            "role": f"{base}?schema={schema}",
            "plain": base,
            "schema": schema,
        }
    finally:
        server.drop_schema(schema)
        admin.execute(sql.SQL("DROP OWNED BY {}").format(who))
        admin.execute(sql.SQL("DROP ROLE {}").format(who))
        admin.close()


def _flow(store: nf.store.Store, tag: str) -> nf.Flow:
    flow = nf.Flow("report", store=store)

    @flow.step
    def secret() -> bytes:
        return f"{tag} only: ".encode() * 500

    @flow.step
    def size(secret: bytes) -> int:
        return len(secret)

    return flow


def test_the_database_keeps_a_tenant_role_to_its_rows(shared: dict[str, str]) -> None:
    owner = PostgresStore(shared["owner"])
    legacy = _flow(owner, "legacy").run(progress=False)
    team_b = PostgresStore(shared["owner"], tenant="team-b")
    run_b = _flow(team_b, "team b").run(progress=False)
    secret_b = team_b.executions(run_b.id)[0].output
    assert secret_b is not None and not secret_b.is_inline

    # The second role, connected for team-a, runs a flow of its own: writes pass the
    # policies (a new run, its events, executions and values).
    analyst = PostgresStore(shared["role"], tenant="team-a")
    run_a = _flow(analyst, "team a").run(progress=False)
    assert run_a.status == "completed" and run_a["size"] == len(b"team a only: " * 500)
    assert analyst.get_run(run_a.id).tenant == "team-a"
    assert {r.run_id for r in analyst.list_runs()} == {run_a.id, legacy.id}
    with pytest.raises(TenantMismatchError) as caught:
        analyst.get_run(run_b.id)
    assert str(caught.value) == str(UnknownRunError(run_b.id, analyst))
    with pytest.raises(StoreError, match="missing"):
        analyst.load_value(secret_b)

    # store.sql is raw SQL on that session: the database shows it team-a's rows only.
    seen = analyst.sql("SELECT run_id, tenant FROM runs ORDER BY run_id")
    assert set(seen["run_id"]) == {run_a.id, legacy.id}
    for table in ("events", "step_executions", "leases"):
        ids = set(analyst.sql(f"SELECT DISTINCT run_id FROM {table}")["run_id"])
        assert run_b.id not in ids, table
    hashes = set(analyst.sql("SELECT hash FROM blobs")["hash"])
    assert secret_b.hash not in hashes
    assert (
        analyst.sql("SELECT count(*) AS n FROM blob_chunks WHERE hash = ?", [secret_b.hash])[
            "n"
        ].iloc[0]
        == 0
    )
    with pytest.raises(StoreError):  # no way to declare another tenant from store.sql
        analyst.sql("SELECT set_config('nbflow.tenant', 'team-b', true)")

    # A plain psycopg connection of that role: the same, whatever nbflow does.
    with psycopg.connect(shared["plain"], autocommit=True) as con:
        con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(shared["schema"])))
        con.execute("SET nbflow.tenant = 'team-a'")
        ids = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
        assert ids == {run_a.id, legacy.id}
        assert con.execute(
            "SELECT count(*) FROM events WHERE run_id = %s", [run_b.id]
        ).fetchone() == (0,)
        assert con.execute(
            "SELECT count(*) FROM blobs WHERE hash = %s", [secret_b.hash]
        ).fetchone() == (0,)
        # Nor can it change them: updates and deletes match no row, inserts are refused.
        con.execute("UPDATE runs SET status = 'cancelled' WHERE run_id = %s", [run_b.id])
        con.execute("DELETE FROM blobs WHERE hash = %s", [secret_b.hash])
        con.execute("DELETE FROM runs WHERE run_id = %s", [legacy.id])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute(
                "INSERT INTO events VALUES (%s, 999, now(), 'run_cancelled', NULL, NULL, '{}')",
                [run_b.id],
            )
        # Without a tenant, the role sees only the runs without one.
        con.execute("RESET nbflow.tenant")
        ids = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
        assert ids == {legacy.id}

    # Nothing of team-b's changed; the owner's view sees all three.
    assert team_b.get_run(run_b.id).status == "completed"
    assert team_b.load_value(secret_b) == b"team b only: " * 500
    assert {r.run_id for r in owner.list_runs()} == {legacy.id, run_a.id, run_b.id}
    assert {r.tenant for r in owner.list_runs()} == {None, "team-a", "team-b"}
    for store in (analyst, team_b, owner):
        store.close()


def test_a_tenant_roles_gc_leaves_other_tenants_values(shared: dict[str, str]) -> None:
    """gc through the second role (whose session cannot see team-b's rows) removes its
    runs and the values only they used, never a value team-b's runs use too."""
    team_b = PostgresStore(shared["owner"], tenant="team-b")
    run_b = _flow(team_b, "same").run(progress=False)
    analyst = PostgresStore(shared["role"], tenant="team-a")
    run_a = _flow(analyst, "same").run(progress=False)  # the same bytes, made again
    shared_hash = team_b.executions(run_b.id)[0].output.hash  # type: ignore[union-attr]
    assert analyst.executions(run_a.id)[0].output.hash == shared_hash  # type: ignore[union-attr]
    report = analyst.gc(keep_last=0)
    assert report.runs == (run_a.id,) and report.blobs == ()
    assert team_b.load_value(team_b.executions(run_b.id)[0].output) == b"same only: " * 500  # type: ignore[arg-type]
    analyst.close()
    team_b.close()
