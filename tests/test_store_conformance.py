"""Every store backend keeps the contract, and they all hold the same content."""

from __future__ import annotations

import pandas as pd

from nbflow.store.base import Store
from nbflow.testing import StoreConformance, populate


class TestStoreConformance(StoreConformance):
    """The conformance suite, once per backend (the ``store`` fixture of conftest.py)."""


def _frames(store: Store, run_ids: list[str]) -> dict[str, pd.DataFrame]:
    out = {"runs": store.runs_frame(), "events": store.events_frame()}
    for run_id in run_ids:
        out[f"events {run_id}"] = store.events_frame(run_id)
        out[f"steps {run_id}"] = store.steps_frame(run_id)
    out["runs filtered"] = store.runs_frame(status=["completed", "failed"], limit=3)
    return out


def test_frames_are_the_same_on_every_backend(all_stores: dict[str, Store]) -> None:
    ids = {name: populate(s) for name, s in all_stores.items()}
    (reference_name, reference), *others = all_stores.items()
    expected = _frames(reference, ids[reference_name])
    for name, other in others:
        assert ids[name] == ids[reference_name]
        got = _frames(other, ids[name])
        for key, frame in expected.items():
            try:
                pd.testing.assert_frame_equal(got[key], frame)
            except AssertionError as exc:
                raise AssertionError(f"{key}: {name} differs from {reference_name}") from exc


def test_records_are_the_same_on_every_backend(all_stores: dict[str, Store]) -> None:
    ids = {name: populate(s) for name, s in all_stores.items()}
    (reference_name, reference), *others = all_stores.items()
    for name, other in others:
        assert other.list_runs() == reference.list_runs(), name
        assert other.read_events() == reference.read_events(), name
        for run_id in ids[reference_name]:
            assert other.executions(run_id) == reference.executions(run_id), (name, run_id)
        assert other.cache_candidates("flow", ["clean-fp"]).keys() == (
            reference.cache_candidates("flow", ["clean-fp"]).keys()
        )
