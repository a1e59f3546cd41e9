"""Reproducing a run recorded on PostgreSQL: the fresh process opens the same schema (with
the credentials it needs, which never appear on its command line), and a tenant's
reproduction is the tenant's run, kept apart by the database (row-level security).

As in tests/test_reproduce.py, each flow is a script run in a process of its own and
deleted before reproducing, so nothing but the record can define the steps again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from store_backends import postgres_server

import nbflow as nf
import nbflow.api.reproduce as reproduce_module
from nbflow.errors import UnknownRunError
from nbflow.store.postgres.store import PostgresStore

PASSWORD = "s3cret-Pa55word"

FLOW = """
    import os
    import numpy as np
    import nbflow as nf
    flow = nf.Flow("pg_report", store=os.environ["STORE_URI"], tenant=os.environ.get("TENANT"))
    SCALE = 2.5

    def spread(values):
        return float(np.std(values))

    @flow.step
    def sample():
        return np.random.default_rng(3).normal(size=50) * SCALE

    @flow.step
    def summary(sample):
        return {"mean": float(sample.mean()), "spread": spread(sample)}

    flow.run(progress=False)
    print(flow.latest_run().id)
"""

# Run in every fresh process (it is on the PYTHONPATH the child inherits): what the
# operating system shows of its command line, for the test to read.
SPY = """
import os, pathlib
_out = os.environ.get("SPY_CMDLINE_DIR")
if _out:
    _text = pathlib.Path("/proc/self/cmdline").read_bytes().replace(b"\\0", b" ")
    pathlib.Path(_out, f"{os.getpid()}.cmdline").write_bytes(_text)
"""


def record(folder: Path, uri: str, tenant: str | None = None) -> str:
    """Run the flow against ``uri`` in a fresh process, delete the script; the run's id."""
    script = folder / "analysis.py"
    script.write_text(textwrap.dedent(FLOW))
    env = {**_environ(), "STORE_URI": uri}
    if tenant is not None:
        env["TENANT"] = tenant
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    script.unlink()
    return done.stdout.strip().splitlines()[-1]


def _environ() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("NBFLOW_TENANT", None)
    return env


@pytest.fixture
def schema() -> Iterator[str]:
    server = postgres_server()
    name = f"r_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        server.drop_schema(name)


@pytest.fixture
def password_role(schema: str) -> Iterator[str]:
    """A role that must give its password (scram-sha-256, not the server's ``trust``);
    the store URI holding it, in a schema of its own."""
    server = postgres_server()
    role = f"pw_{uuid.uuid4().hex[:8]}"
    hba = server.data / "pg_hba.conf"
    before = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + before)
    admin = psycopg.connect(server.uri(), autocommit=True)
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), PASSWORD)
    )
    admin.execute(sql.SQL("GRANT CREATE ON DATABASE postgres TO {}").format(sql.Identifier(role)))
    admin.execute("SELECT pg_reload_conf()")
    try:
        yield f"postgresql://{role}:{PASSWORD}@{server.host}:{server.port}/postgres?schema={schema}"
    finally:
        hba.write_text(before)
        admin.execute("SELECT pg_reload_conf()")
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


def test_a_run_on_postgres_reproduces_identically_in_a_fresh_process(
    tmp_path: Path, schema: str
) -> None:
    uri = postgres_server().uri(schema=schema)
    run_id = record(tmp_path, uri)
    with nf.open_store(uri) as store:
        frame = nf.get_run(run_id, store).reproduce()
        child = nf.get_run(frame.attrs["reproduction"], store)
        assert child.record.parent_run_id == run_id
        assert child.outputs["summary"] == nf.get_run(run_id, store).outputs["summary"]
    assert frame["step"].tolist() == ["sample", "summary"]
    assert frame["status"].tolist() == ["identical", "identical"]
    assert (frame["recorded_hash"] == frame["reproduced_hash"]).all()


def test_the_password_reaches_the_fresh_process_but_not_its_command_line(
    tmp_path: Path, password_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy_dir, seen = tmp_path / "spy", tmp_path / "cmdlines"
    spy_dir.mkdir()
    seen.mkdir()
    (spy_dir / "sitecustomize.py").write_text(SPY)
    run_id = record(tmp_path, password_role)
    store = PostgresStore(password_role)
    assert PASSWORD not in store.uri  # what is shown of the store leaves it out
    commands: list[list[str]] = []
    real_run = subprocess.run

    def spied(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(list(command))
        return real_run(command, **kwargs)

    monkeypatch.setattr(reproduce_module.subprocess, "run", spied)
    monkeypatch.setenv("PYTHONPATH", str(spy_dir))
    monkeypatch.setenv("SPY_CMDLINE_DIR", str(seen))
    try:
        frame = nf.get_run(run_id, store).reproduce()
    finally:
        store.close()
    assert frame["status"].tolist() == ["identical", "identical"]
    assert commands and all(PASSWORD not in " ".join(c) for c in commands)
    cmdlines = [p.read_text() for p in seen.glob("*.cmdline")]
    replays = [c for c in cmdlines if "nbflow.api.replay" in c]
    assert replays, cmdlines  # the hook did see the fresh process
    assert all(PASSWORD not in c for c in cmdlines)
    assert all("postgresql://" not in c for c in replays)


def test_the_fresh_process_without_the_password_fails_naming_no_secret(
    tmp_path: Path, password_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password that no longer works (changed since) fails the reproduction clearly,
    and the error does not repeat it."""
    run_id = record(tmp_path, password_role)
    wrong = password_role.replace(PASSWORD, "not-the-password")
    store = PostgresStore(password_role)
    run = nf.get_run(run_id, store)
    monkeypatch.setattr(store, "connection_uri", lambda: wrong)
    try:
        with pytest.raises(nf.errors.ReproductionError, match="could not run") as caught:
            run.reproduce()
    finally:
        store.close()
    assert "not-the-password" not in str(caught.value)
    assert PASSWORD not in str(caught.value)


@pytest.fixture
def tenant_role(schema: str) -> Iterator[tuple[str, str]]:
    """The store's owner URI, and a role's (not the owner, so the database's row-level
    security applies to it) granted the use of its tables, as docs/tenants.md sets up."""
    server = postgres_server()
    role = f"analyst_{uuid.uuid4().hex[:8]}"
    owner_uri = server.uri(schema=schema)
    PostgresStore(owner_uri).close()
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
    try:
        yield owner_uri, f"postgresql://{role}@{server.host}:{server.port}/postgres?schema={schema}"
    finally:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
        admin.execute(sql.SQL("DROP OWNED BY {}").format(who))
        admin.execute(sql.SQL("DROP ROLE {}").format(who))
        admin.close()


def test_a_tenants_reproduction_on_postgres_is_the_tenants_run(
    tmp_path: Path, tenant_role: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner_uri, role_uri = tenant_role
    run_id = record(tmp_path, role_uri, tenant="team-a")
    monkeypatch.setenv("NBFLOW_TENANT", "team-b")  # the caller's environment says otherwise
    with PostgresStore(role_uri, tenant="team-a") as store:
        assert store._row_security  # the database, not only nbflow, keeps tenants apart
        frame = nf.get_run(run_id, store).reproduce(check_determinism=False)
        child = frame.attrs["reproduction"]
    assert frame["status"].tolist() == ["identical", "identical"]
    with PostgresStore(owner_uri) as owner:
        assert owner.get_run(child).tenant == "team-a"
        assert owner.get_run(child).parent_run_id == run_id
    with PostgresStore(role_uri, tenant="team-b") as other:
        with pytest.raises(UnknownRunError):
            other.get_run(child)
        # through SQL, too: the database shows team-b's session none of team-a's rows
        rows = other.sql(f"SELECT count(*) AS n FROM runs WHERE run_id = '{child}'")
        assert int(rows["n"].iloc[0]) == 0
    assert json.dumps(frame.attrs["environment"]) == "[]"
