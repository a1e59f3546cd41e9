"""A large DataFrame checkpoint, written and read back, against pickle and DuckDB itself.

The frame has ``rows`` rows and four columns: ``id`` (int64, 0..n-1), ``x`` (float64,
uniform), ``y`` (float64, normal) and ``label`` (pandas' default ``str`` dtype, i.e.
Arrow-backed strings, drawn from 1,000 distinct 5-character labels). Rates are
``df.memory_usage(deep=True).sum()`` bytes per second.

Each write goes to a fresh file in the work directory; the clock covers what turns the
in-memory frame into a durable copy:

* nbflow: ``store.put_value(encode(df))`` (Arrow conversion, content hash, round-trip
  check, ``CREATE TABLE AS`` and ``COMMIT``); encode and put are also kept apart;
* DuckDB: ``pa.Table.from_pandas(df)`` then ``CREATE TABLE t AS SELECT * FROM <arrow>``
  + ``COMMIT``, timed with and without the conversion;
* pickle: ``pickle.dump(df, f, protocol=5)`` + ``fsync``.

Reads come from the files written last, each through a freshly opened connection (the
open is not timed; all three read from the OS page cache): ``store.load_value(ref)``,
``con.sql("select * from t").to_arrow_table().to_pandas()``, and ``pickle.load``.
"""

from __future__ import annotations

import gc
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.timing import timed
from nbflow.store.duckdb.digest import table_digest
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import Codec, ValueRef
from nbflow.values import encode

LABELS = 1_000


@dataclass
class FrameResult:
    """Seconds of each repetition of every DataFrame measurement."""

    rows: int
    nbytes: int
    description: str
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        """Record one sample of measurement ``name``."""
        self.samples.setdefault(name, []).append(seconds)


def make_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """The benchmark frame (see the module docstring)."""
    rng = np.random.default_rng(seed)
    labels = pa.array([f"k{i:04d}" for i in range(LABELS)])
    codes = pa.array(rng.integers(0, LABELS, rows))
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.random(rows),
            "y": rng.standard_normal(rows),
            "label": pd.array(pc.take(labels, codes), dtype="str"),
        }
    )


def describe(df: pd.DataFrame) -> str:
    """A one-line description of the frame: rows, columns with dtypes, size."""
    columns = ", ".join(f"{name} {dtype}" for name, dtype in df.dtypes.items())
    size = df.memory_usage(deep=True).sum() / 1e6
    return f"{len(df):,} rows ({columns}), {size:.0f} MB in memory"


# -- writes ------------------------------------------------------------------------------


def write_nbflow(df: pd.DataFrame, path: Path, result: FrameResult) -> ValueRef:
    """``store.put_value(encode(df))`` into a fresh store; records total, encode, put."""
    store = DuckDBStore(path)
    try:
        gc.collect()
        start = time.perf_counter()
        encoded = encode(df, step="frame")
        encoded_at = time.perf_counter()
        ref = store.put_value(encoded)
        done = time.perf_counter()
    finally:
        store.close()
    if ref.codec is not Codec.ARROW:
        raise RuntimeError(f"the frame was stored as {ref.codec.value}, not as a DuckDB table")
    result.add("nbflow_write", done - start)
    result.add("nbflow_encode", encoded_at - start)
    result.add("nbflow_put", done - encoded_at)
    return ref


def write_duckdb(df: pd.DataFrame, path: Path, result: FrameResult) -> None:
    """DuckDB's own Arrow ingest into a fresh file: conversion and ingest timed apart."""
    con = duckdb.connect(str(path))
    try:
        gc.collect()
        start = time.perf_counter()
        table = pa.Table.from_pandas(df)
        converted = time.perf_counter()
        con.register("frame_arrow", table)
        con.execute("BEGIN TRANSACTION")
        con.execute("CREATE TABLE t AS SELECT * FROM frame_arrow")
        con.execute("COMMIT")
        done = time.perf_counter()
        con.unregister("frame_arrow")
    finally:
        con.close()
    result.add("duckdb_write", done - start)
    result.add("duckdb_from_pandas", converted - start)
    result.add("duckdb_ingest", done - converted)


def write_pickle(df: pd.DataFrame, path: Path, result: FrameResult) -> None:
    """``pickle.dump`` (protocol 5) to a file, flushed and fsynced."""

    def dump() -> None:
        with path.open("wb") as fh:
            pickle.dump(df, fh, protocol=5)
            fh.flush()
            os.fsync(fh.fileno())

    seconds, _ = timed(dump)
    result.add("pickle_write", seconds)


# -- reads -------------------------------------------------------------------------------


def _check_frame(shape: tuple[int, int], back: Any, who: str) -> None:
    """Fail loudly if a read did not bring the whole frame back."""
    if not isinstance(back, pd.DataFrame) or back.shape != shape:
        raise RuntimeError(f"{who} read back {type(back).__name__} {getattr(back, 'shape', '')}")


def read_nbflow(shape: tuple[int, int], path: Path, ref: ValueRef, result: FrameResult) -> None:
    """``store.load_value(ref)`` through a freshly opened store; and, on its own, the
    check of the frame's table that the load includes (nbflow.store.duckdb.digest)."""
    store = DuckDBStore(path)
    try:
        seconds, back = timed(lambda: store.load_value(ref))
        table = store.table_name(ref)
        assert table is not None
        with store._lock, store._all_threads(ref.size):
            check, _ = timed(lambda: table_digest(store._con, table))
    finally:
        store.close()
    _check_frame(shape, back, "nbflow")
    result.add("nbflow_read", seconds)
    result.add("nbflow_table_check", check)


def read_duckdb(shape: tuple[int, int], path: Path, result: FrameResult) -> None:
    """``select * from t`` to Arrow, then to pandas, through a fresh connection."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        seconds, back = timed(lambda: con.sql("SELECT * FROM t").to_arrow_table().to_pandas())
    finally:
        con.close()
    _check_frame(shape, back, "DuckDB")
    result.add("duckdb_read", seconds)


def read_pickle(shape: tuple[int, int], path: Path, result: FrameResult) -> None:
    """``pickle.load`` from the file."""

    def load() -> Any:
        with path.open("rb") as fh:
            return pickle.load(fh)

    seconds, back = timed(load)
    _check_frame(shape, back, "pickle")
    result.add("pickle_read", seconds)


# -- the whole measurement ---------------------------------------------------------------


def _remove(*paths: Path) -> None:
    for path in paths:
        for candidate in (path, path.with_name(path.name + ".wal")):
            candidate.unlink(missing_ok=True)


def _write_all(df: pd.DataFrame, paths: tuple[Path, Path, Path], result: FrameResult) -> ValueRef:
    """One repetition of the three writes, each into a fresh file."""
    nb_path, dk_path, pk_path = paths
    _remove(*paths)
    ref = write_nbflow(df, nb_path, result)
    write_duckdb(df, dk_path, result)
    write_pickle(df, pk_path, result)
    return ref


def _read_all(
    shape: tuple[int, int], paths: tuple[Path, Path, Path], ref: ValueRef, result: FrameResult
) -> None:
    """One repetition of the three reads."""
    nb_path, dk_path, pk_path = paths
    read_nbflow(shape, nb_path, ref, result)
    read_duckdb(shape, dk_path, result)
    read_pickle(shape, pk_path, result)


def run_dataframes(
    workdir: Path, rows: int, repeats: int, log: Callable[[str], None] = print
) -> FrameResult:
    """Write the frame ``repeats`` times each way (interleaved), then read it back.

    The frame itself is dropped before the reads, so at most two copies live at once.
    """
    log(f"  building a {rows:,}-row frame")
    df = make_frame(rows)
    result = FrameResult(rows, int(df.memory_usage(deep=True).sum()), describe(df))
    paths = (workdir / "frame.duckdb", workdir / "t.duckdb", workdir / "t.pickle")
    for rep in range(repeats):
        log(f"  DataFrame write: repetition {rep + 1}/{repeats}")
        ref = _write_all(df, paths, result)
    shape = df.shape
    del df
    for rep in range(repeats):
        log(f"  DataFrame read: repetition {rep + 1}/{repeats}")
        _read_all(shape, paths, ref, result)
    _remove(*paths)
    return result
