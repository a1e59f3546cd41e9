"""The store contract: frames, values and read-only SQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from nbflow.errors import (
    ParameterError,
    StoreError,
)
from nbflow.store import frames
from nbflow.store.base import Store
from nbflow.store.records import (
    Codec,
    StepStatus,
    ValueRef,
)
from nbflow.testing.builders import (
    T0,
    TRICKY_PAYLOAD,
    Opaque,
    assert_same_value,
    is_utc,
    populate,
    snapshot,
)


class ValueConformance:
    """The store contract: frames, values and read-only SQL."""

    # -- frames -------------------------------------------------------------------------

    @staticmethod
    def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
        return {str(name): str(dtype) for name, dtype in frame.dtypes.items()}

    def test_runs_frame_columns_and_dtypes(self, store: Store) -> None:
        """runs_frame has exactly RUN_COLUMNS, populated or empty."""
        assert self._dtypes(store.runs_frame()) == frames.RUN_COLUMNS
        populate(store)
        assert self._dtypes(store.runs_frame()) == frames.RUN_COLUMNS
        assert self._dtypes(store.runs_frame(flow="nothing")) == frames.RUN_COLUMNS

    def test_events_frame_columns_and_dtypes(self, store: Store) -> None:
        """events_frame has exactly EVENT_COLUMNS, populated or empty."""
        assert self._dtypes(store.events_frame()) == frames.EVENT_COLUMNS
        populate(store)
        assert self._dtypes(store.events_frame()) == frames.EVENT_COLUMNS
        assert self._dtypes(store.events_frame("r-pending")) == frames.EVENT_COLUMNS

    def test_steps_frame_columns_and_dtypes(self, store: Store) -> None:
        """steps_frame has exactly STEP_COLUMNS, populated or empty."""
        populate(store)
        assert self._dtypes(store.steps_frame("r-retried")) == frames.STEP_COLUMNS
        assert self._dtypes(store.steps_frame("r-pending")) == frames.STEP_COLUMNS

    def test_runs_frame_matches_the_records(self, store: Store) -> None:
        """runs_frame holds what list_runs returns, row for row, with every filter."""
        populate(store)
        cases: list[dict[str, Any]] = [
            {},
            {"flow": "flow"},
            {"status": ["completed", "failed"]},
            {"thread_id": "t1"},
            {"limit": 3},
        ]
        for filters in cases:
            expected = frames.runs_frame(store.list_runs(**filters))
            pd.testing.assert_frame_equal(store.runs_frame(**filters), expected)

    def test_runs_frame_values(self, store: Store) -> None:
        """A few cells: params as dicts, UTC timestamps, durations, errors."""
        populate(store)
        frame = store.runs_frame().set_index("run_id")
        assert frame.loc["r-retried", "params"] == {"n": 5, "name": "ü"}
        assert frame.loc["r-failed", "error"] == "step 'load' failed"
        assert frame.loc["r-fork", "fork_from_version"] == 7
        assert frame.loc["r-done", "duration_s"] == pytest.approx(11.0)
        assert frame["started_at"].isna()["r-pending"]
        assert frame.loc["r-done", "created_at"] == pd.Timestamp(T0 + dt.timedelta(minutes=1))

    def test_runs_frame_refuses_an_unknown_status(self, store: Store) -> None:
        """runs_frame validates the status filter like list_runs."""
        with pytest.raises(ParameterError, match="nope"):
            store.runs_frame(status="nope")

    def test_events_frame_matches_the_records(self, store: Store) -> None:
        """events_frame holds what read_events returns, for one run or all."""
        ids = populate(store)
        pd.testing.assert_frame_equal(
            store.events_frame(), frames.events_frame(store.read_events())
        )
        for run_id in ids:
            pd.testing.assert_frame_equal(
                store.events_frame(run_id), frames.events_frame(store.read_events(run_id))
            )

    def test_steps_frame_matches_the_records(self, store: Store) -> None:
        """steps_frame holds what executions returns."""
        for run_id in populate(store):
            pd.testing.assert_frame_equal(
                store.steps_frame(run_id), frames.steps_frame(store.executions(run_id))
            )

    def test_steps_frame_values(self, store: Store) -> None:
        """A few cells: attempts, statuses, output columns, source run."""
        populate(store)
        frame = store.steps_frame("r-cached")
        assert list(frame["step"]) == ["load", "clean"]
        assert list(frame["attempt"]) == [0, 1]
        assert list(frame["status"]) == ["cached", "completed"]
        assert list(frame["output_codec"]) == ["json", "json"]
        assert frame.loc[0, "source_run_id"] == "r-done"
        assert frame.loc[0, "output_hash"] == "hash-0"

    # -- values -------------------------------------------------------------------------

    def test_an_inline_json_value_writes_no_blob(self, store: Store) -> None:
        """A small JSON value lives in its ref: no blob, and it loads back."""
        from nbflow.values import encode

        value = {"rows": 3, "name": TRICKY_PAYLOAD["unicode"]}
        encoded = encode(value, step="s")
        assert encoded.ref.is_inline
        assert store.put_value(encoded) == encoded.ref
        assert store.list_blobs() == []
        assert store.load_value(encoded.ref) == value

    @staticmethod
    def _blob_values() -> Iterator[tuple[str, Any, set[Codec]]]:
        import numpy as np

        frame = pd.DataFrame(
            {"x": [1, 2, 3], "name": ["a", "é", None], "y": [0.5, float("nan"), 2.0]}
        )
        yield "dataframe", frame, {Codec.ARROW, Codec.ARROW_IPC}
        yield "array", np.arange(12, dtype="float64").reshape(3, 4), {Codec.NUMPY}
        yield "pickle", Opaque("thing", (1, 2, 3)), {Codec.PICKLE}

    @pytest.mark.parametrize("kind", ["dataframe", "array", "pickle"])
    def test_a_blob_value_writes_one_blob(self, store: Store, kind: str) -> None:
        """A DataFrame, array or pickled object is stored as one blob under its hash."""
        from nbflow.values import encode

        _, value, codecs = next(v for v in self._blob_values() if v[0] == kind)
        encoded = encode(value, step="s")
        assert encoded.ref.codec in codecs
        assert not store.has_blob(encoded.ref.hash)
        assert store.put_value(encoded) == encoded.ref
        assert store.has_blob(encoded.ref.hash)
        (blob,) = store.list_blobs()
        assert (blob.hash, blob.codec, blob.size) == (
            encoded.ref.hash,
            encoded.ref.codec,
            encoded.ref.size,
        )
        assert is_utc(blob.created_at)

    @pytest.mark.parametrize("kind", ["dataframe", "array", "pickle"])
    def test_an_equal_value_is_stored_once(self, store: Store, kind: str) -> None:
        """Putting an equal value again (from another step) writes no new blob."""
        import copy

        from nbflow.values import encode

        _, value, _ = next(v for v in self._blob_values() if v[0] == kind)
        first = store.put_value(encode(value, step="s1"))
        second = store.put_value(encode(copy.deepcopy(value), step="s2"))
        assert second.hash == first.hash
        assert len(store.list_blobs()) == 1

    @pytest.mark.parametrize("kind", ["dataframe", "array", "pickle"])
    def test_a_blob_value_loads_back_equal(self, store: Store, kind: str) -> None:
        """load_value returns a value equal to the one stored."""
        from nbflow.values import encode

        _, value, _ = next(v for v in self._blob_values() if v[0] == kind)
        ref = store.put_value(encode(value, step="s"))
        assert_same_value(store.load_value(ref), value)

    @pytest.mark.parametrize("kind", ["dataframe", "array", "pickle"])
    def test_read_encoded_gives_the_stored_form(self, store: Store, kind: str) -> None:
        """read_encoded hands back a value as stored, not decoded: put into another store
        it is the same value under the same hash. A missing blob is a StoreError."""
        from nbflow.store.open import open_store
        from nbflow.values import encode

        _, value, _ = next(v for v in self._blob_values() if v[0] == kind)
        encoded = encode(value, step="s")
        ref = store.put_value(encoded)
        stored = store.read_encoded(ref)
        assert (stored.ref.codec, stored.ref.hash, stored.ref.size) == (
            ref.codec,
            ref.hash,
            ref.size,
        )
        if encoded.data is not None:
            assert stored.data == encoded.data
        other = open_store("memory://", trust=True)  # a fresh in-memory store
        assert other.put_value(stored).hash == ref.hash
        assert_same_value(other.load_value(ref), value)
        inline = encode(7, step="s").ref
        assert store.read_encoded(inline).ref == inline
        missing = ValueRef(Codec.NUMPY, "0123456789abcdef" * 2, 10, "ndarray")
        with pytest.raises(StoreError, match=missing.hash):
            store.read_encoded(missing)

    def test_different_values_are_different_blobs(self, store: Store) -> None:
        """Each distinct value gets its own blob."""
        from nbflow.values import encode

        refs = [store.put_value(encode(v, step="s")) for _, v, _ in self._blob_values()]
        assert len({r.hash for r in refs}) == 3
        assert {b.hash for b in store.list_blobs()} == {r.hash for r in refs}

    def test_loading_a_missing_blob_is_a_store_error(self, store: Store) -> None:
        """A ref whose blob is absent raises StoreError naming the hash."""
        ref = ValueRef(Codec.NUMPY, "0123456789abcdef" * 2, 10, "ndarray")
        with pytest.raises(StoreError, match=ref.hash):
            store.load_value(ref)

    def test_an_untrusted_store_refuses_only_pickles(self, store: Store) -> None:
        """With ``trust=False``, a pickled output is refused with an error naming the step
        and the run; DataFrames and arrays load as usual."""
        from nbflow.errors import UntrustedStoreError
        from nbflow.values import encode

        refs = {
            kind: (store.put_value(encode(v, step="s")), v) for kind, v, _ in self._blob_values()
        }
        store.trust = False
        ref, _ = refs.pop("pickle")
        with pytest.raises(UntrustedStoreError, match=r"step 's' in run r-1 .*trust=True"):
            store.load_output(ref, step="s", run_id="r-1")
        with pytest.raises(UntrustedStoreError, match=ref.hash):
            store.load_value(ref)
        for ref, value in refs.values():
            assert_same_value(store.load_output(ref, step="s", run_id="r-1"), value)

    # -- SQL ----------------------------------------------------------------------------

    def test_sql_select_returns_a_dataframe(self, store: Store) -> None:
        """A SELECT over the runs table returns a DataFrame of its rows."""
        populate(store)
        frame = store.sql("SELECT run_id, status, version FROM runs ORDER BY run_id")
        assert isinstance(frame, pd.DataFrame)
        expected = sorted((r.run_id, r.status.value, r.version) for r in store.list_runs())
        assert list(frame.itertuples(index=False, name=None)) == expected

    def test_sql_takes_parameters(self, store: Store) -> None:
        """Positional parameters are bound, not pasted."""
        populate(store)
        frame = store.sql("SELECT run_id FROM runs WHERE status = ? ORDER BY run_id", ["failed"])
        assert list(frame["run_id"]) == ["r-failed"]
        quoted = store.sql("SELECT count(*) AS n FROM runs WHERE run_id = ?", ["x' OR '1'='1"])
        assert int(quoted["n"].iloc[0]) == 0

    def test_sql_sees_events_and_step_executions(self, store: Store) -> None:
        """The events table holds every event; step_executions every finished attempt
        (an attempt still running is in the events, and in ``executions``)."""
        ids = populate(store)
        n_events = store.sql("SELECT count(*) AS n FROM events")["n"].iloc[0]
        assert int(n_events) == len(store.read_events())
        n_rows = store.sql("SELECT count(*) AS n FROM step_executions")["n"].iloc[0]
        finished = [
            x for r in ids for x in store.executions(r) if x.status is not StepStatus.RUNNING
        ]
        assert int(n_rows) == len(finished)
        steps = store.sql(
            "SELECT step, attempt, status FROM step_executions WHERE run_id = ? ORDER BY seq",
            ["r-retried"],
        )
        assert list(steps.itertuples(index=False, name=None)) == [
            ("load", 1, "failed"),
            ("load", 2, "completed"),
            ("clean", 1, "completed"),
        ]

    @pytest.mark.parametrize(
        "query",
        [
            "INSERT INTO runs (run_id) VALUES ('x')",
            "DELETE FROM runs",
            "UPDATE runs SET status = 'completed'",
            "CREATE TABLE evil (a INTEGER)",
            "DROP TABLE runs",
            "SELECT 1; SELECT 2",
            "SELECT 1; DROP TABLE runs",
            "EXPLAIN ANALYZE DELETE FROM events",
        ],
    )
    def test_sql_is_read_only(self, store: Store, query: str) -> None:
        """Writes and multiple statements are refused with StoreError; nothing changes."""
        ids = populate(store)
        before = [snapshot(store, r) for r in ids], store.read_events()
        with pytest.raises(StoreError, match=r"read-only|one statement"):
            store.sql(query)
        assert ([snapshot(store, r) for r in ids], store.read_events()) == before
        assert int(store.sql("SELECT count(*) AS n FROM runs")["n"].iloc[0]) == len(ids)

    def test_sql_names_the_statement_it_refuses(self, store: Store) -> None:
        """The refusal says what kind of statement was refused."""
        with pytest.raises(StoreError, match="read-only: a DELETE statement"):
            store.sql("DELETE FROM runs")
        with pytest.raises(StoreError, match="this query has 2"):
            store.sql("SELECT 1; SELECT 2")

    @pytest.mark.parametrize("query", ["SELECT * FROM no_such_table", "SELEKT 1"])
    def test_a_failing_query_is_a_store_error(self, store: Store, query: str) -> None:
        """A query that does not parse or fails raises StoreError, not a driver error."""
        with pytest.raises(StoreError):
            store.sql(query)
