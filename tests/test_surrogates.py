"""Text that is not valid Unicode (a lone surrogate, as ``errors='surrogateescape'``
decoding makes) reaches nbflow in outputs, error messages, parameters and names. No store
can hold it as text; nbflow stores what it can and refuses the rest with a clear error.
"""

from __future__ import annotations

import pandas as pd
import pytest

import nbflow as nf
from nbflow.errors import DefinitionError, ParameterError
from nbflow.store.base import Store

BAD = "caf\udce9"  # b"caf\xe9" decoded with surrogateescape


def test_a_frame_holding_lone_surrogates_is_stored_and_read_back(store: Store) -> None:
    flow = nf.Flow("text", store=store)

    @flow.step
    def names():
        return pd.DataFrame({"name": pd.Series([BAD, "tea"], dtype=object), "n": [1, 2]})

    @flow.step
    def words():
        return {"first": BAD}

    run = flow.run(progress=False)
    pd.testing.assert_frame_equal(run["names"], names())
    assert run["words"] == {"first": BAD}
    # Arrow cannot hold such text: the frame is kept whole, as a pickle.
    assert run.ref("names").codec.value == "pickle"


def test_an_error_message_holding_lone_surrogates_is_recorded(store: Store) -> None:
    flow = nf.Flow("errors", store=store)

    @flow.step
    def boom():
        raise ValueError(f"cannot parse {BAD}")

    run = flow.run(progress=False, raise_on_error=False)
    assert run.status == "failed"
    # The message keeps the surrogate as its escape: every store and frame holds it.
    assert run.error is not None and "cannot parse caf\\udce9" in run.error
    steps = run.steps
    assert "caf\\udce9" in steps.loc[steps["step"] == "boom", "error"].iloc[0]
    assert len(run.events) > 0


def test_a_parameter_holding_lone_surrogates_is_refused(store: Store) -> None:
    flow = nf.Flow("params", store=store)

    @flow.step
    def greet(name: str = "you"):
        return f"hello {name}"

    with pytest.raises(ParameterError, match="'name' = 'caf\\\\udce9' cannot be recorded"):
        flow.run(name=BAD, progress=False)
    assert store.list_runs() == []


def test_a_flow_name_holding_lone_surrogates_is_refused() -> None:
    with pytest.raises(DefinitionError, match="valid Unicode"):
        nf.Flow(BAD, store="memory://")


def test_a_step_without_source_holding_lone_surrogates_is_fingerprinted() -> None:
    # Code compiled from a string has no source file: its bytecode is fingerprinted,
    # constants included.
    namespace: dict[str, object] = {}
    exec(compile(f"def label():\n    return {BAD!r}\n", "<cell>", "exec"), namespace)
    flow = nf.Flow("bytecode", store="memory://")
    flow.step(namespace["label"])  # type: ignore[arg-type]
    run = flow.run(progress=False)
    assert run["label"] == BAD
    assert flow.run(progress=False).steps["status"].tolist() == ["cached"]
