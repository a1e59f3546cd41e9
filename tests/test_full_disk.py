"""A full disk fails a run cleanly: the run ends failed saying so, and resumes once there
is room again. The store lives on a small tmpfs the test mounts (root only)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.errors import StepFailed, StoreFullError
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import RunStatus


def _mount(folder: Path, size: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", folder],
        capture_output=True,
        text=True,
    )


@contextlib.contextmanager
def _small_disk(parent: Path, size: str = "20m") -> Iterator[Path]:
    """A file system of ``size`` of its own, in a new folder of ``parent``."""
    folder = parent / f"disk-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    if os.geteuid() != 0 or _mount(folder, size).returncode != 0:
        pytest.skip("mounting a small file system needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", folder], check=False)
        folder.rmdir()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB file system of its own."""
    with _small_disk(tmp_path) as folder:
        yield folder


def _big_flow(store: nf.Store, executed: list[str]) -> nf.Flow:
    flow = nf.Flow("full", store=store)

    @flow.step
    def small():
        executed.append("small")
        return 1

    @flow.step
    def big(small):
        executed.append("big")
        return pd.DataFrame({"x": np.arange(50_000_000 // 8, dtype="float64")})  # 50 MB

    @flow.step
    def after(big):
        executed.append("after")
        return len(big)

    return flow


def test_a_checkpoint_the_disk_cannot_hold_fails_the_run_and_it_resumes(small_disk: Path):
    store = DuckDBStore(small_disk / "store.duckdb")
    executed: list[str] = []
    flow = _big_flow(store, executed)
    with pytest.raises(StepFailed) as failed:
        flow.run(progress=False)
    assert failed.value.step == "big"
    assert isinstance(failed.value.__cause__, StoreFullError)
    message = str(failed.value)
    assert "is full" in message and str(small_disk / "store.duckdb") in message
    (record,) = store.list_runs()
    assert record.status is RunStatus.FAILED  # ended, not left running
    assert "the disk holding the store" in (record.error or "")
    assert store.lease(record.run_id) is None
    assert store.check() == []
    big_rows = [x for x in store.executions(record.run_id) if x.step == "big"]
    assert len(big_rows) == 1  # a full disk is not worth a retry

    # Room again: the run resumes from its checkpoints (`small` is not run again).
    assert _mount(small_disk, "400m", "remount").returncode == 0
    executed.clear()
    run = nf.get_run(record.run_id, store=store).resume(progress=False)
    assert run.status == "completed" and run["after"] == 50_000_000 // 8
    assert executed == ["big", "after"]
    assert store.check() == []
    store.close()


def test_a_run_whose_end_cannot_be_written_reads_interrupted_and_resumes(tmp_path, monkeypatch):
    """When even recording the failure is refused, the run is left to be reaped: it
    reads as interrupted once a write can be made, and resumes."""
    store = DuckDBStore(tmp_path / "store.duckdb")
    executed: list[str] = []
    flow = _big_flow(store, executed)
    writes = DuckDBStore._write_events_once
    full = {"now": False}

    def refuse_when_full(self, *args, **kwargs):
        if full["now"]:
            raise StoreFullError("the disk holding the store is full (simulated)")
        return writes(self, *args, **kwargs)

    stored = DuckDBStore.put_value

    def put_value(self, encoded):
        if encoded.ref.is_inline:  # small's 1: no bytes to write
            return encoded.ref
        if encoded.ref.codec.value == "json_blob":  # the run's record, written as it starts
            return stored(self, encoded)
        full["now"] = True  # the disk fills while the big value is written
        raise StoreFullError("the disk holding the store is full (simulated)")

    monkeypatch.setattr(DuckDBStore, "_write_events_once", refuse_when_full)
    with monkeypatch.context() as patch:
        patch.setattr(DuckDBStore, "put_value", put_value)
        with pytest.raises(StoreFullError):
            flow.run(progress=False)
    (run_id,) = [r.run_id for r in store._list_runs()]
    assert store._get_run(run_id).status is RunStatus.RUNNING  # its end was refused
    assert run_id not in store._executing
    full["now"] = False  # space again
    assert store.get_run(run_id).status is RunStatus.INTERRUPTED
    executed.clear()
    run = nf.get_run(run_id, store=store).resume(progress=False)
    assert run.status == "completed"
    assert executed == ["big", "after"]
    assert store.check() == []
    store.close()


def test_a_postgresql_server_with_a_full_disk_fails_the_run_and_it_resumes():
    """The same on PostgreSQL: the store's database lives in a tablespace on a small
    file system (in the server's folder, which its user can reach)."""
    from store_backends import postgres_server

    server = postgres_server()
    with _small_disk(server.folder, "40m") as disk:
        _full_postgres(server, disk)


def _full_postgres(server: Any, small_disk: Path) -> None:
    import psycopg
    from psycopg import sql

    from nbflow.store.postgres.store import PostgresStore

    name = f"full_{uuid.uuid4().hex[:8]}"
    user = server._as_user or "postgres"
    shutil.chown(small_disk, user, user)
    with psycopg.connect(server.uri(), autocommit=True) as con:
        con.execute(
            sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
                sql.Identifier(name), sql.Literal(str(small_disk))
            )
        )
        con.execute(
            sql.SQL("CREATE DATABASE {} TABLESPACE {}").format(
                sql.Identifier(name), sql.Identifier(name)
            )
        )
    store = PostgresStore(server.uri(database=name))
    try:
        executed: list[str] = []
        flow = nf.Flow("full", store=store)

        @flow.step
        def small():
            executed.append("small")
            return 1

        @flow.step
        def big(small):
            executed.append("big")
            return np.random.default_rng(0).bytes(60_000_000)  # more than the disk holds

        with pytest.raises((StepFailed, StoreFullError)) as failed:
            flow.run(progress=False)
        assert "is full" in str(failed.value)
        (record,) = store._list_runs()
        assert _mount(small_disk, "400m", "remount").returncode == 0
        # Ended failed, or (when even that write was refused) read as interrupted now.
        status = store.get_run(record.run_id).status
        assert status in (RunStatus.FAILED, RunStatus.INTERRUPTED)
        executed.clear()
        run = nf.get_run(record.run_id, store=store).resume(progress=False)
        assert run.status == "completed" and len(run["big"]) == 60_000_000
        assert executed == ["big"]
        assert store.check() == []
    finally:
        store.close()
        with psycopg.connect(server.uri(), autocommit=True) as con:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            con.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(name)))
