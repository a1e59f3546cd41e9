"""The reusable JSON encoders write exactly what json.dumps writes (fingerprints, cache
keys and stored rows depend on it)."""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from nbflow import json_text
from nbflow.json_text import compact_encoder

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
keys = st.text() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.booleans() | st.none()
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=20,
)


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values, sort_keys=st.booleans())
def test_the_text_is_json_dumps_text(value: Any, sort_keys: bool) -> None:
    encode = compact_encoder(sort_keys=sort_keys, default=repr)
    assert encode(value) == json.dumps(
        value, separators=(",", ":"), sort_keys=sort_keys, default=repr
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping=st.dictionaries(keys, scalars, max_size=5))
def test_keys_that_are_not_strings_are_written_as_json_dumps_writes_them(mapping: dict) -> None:
    encode = compact_encoder()
    try:
        expected = json.dumps(mapping, separators=(",", ":"))
    except TypeError:
        with pytest.raises(TypeError):
            encode(mapping)
        return
    assert encode(mapping) == expected


def test_default_handles_what_json_cannot_and_errors_come_through() -> None:
    assert compact_encoder(default=repr)({"x": Opaque()}) == '{"x":"<opaque>"}'
    assert compact_encoder(default=str)([b"raw"]) == "[\"b'raw'\"]"
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact_encoder()({"x": Opaque()})
    # After a failure the encoder is as good as new (no leftover bookkeeping).
    encode = compact_encoder()
    with pytest.raises(TypeError):
        encode([1, [2, Opaque()]])
    assert encode([1, [2, 3]]) == "[1,[2,3]]"


def test_a_value_containing_itself_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises((RecursionError, ValueError)):
        compact_encoder()(loop)
    assert compact_encoder()([1, 2]) == "[1,2]"


@pytest.mark.parametrize(
    "c_encoder",
    [
        None,  # a Python without the C accelerator
        lambda *args: lambda value, level: ("wrong",),  # one whose text differs
        lambda *args: (_ for _ in ()).throw(TypeError("other signature")),  # other arguments
    ],
)
def test_without_a_usable_c_encoder_the_plain_one_is_used(monkeypatch, c_encoder) -> None:
    monkeypatch.setattr(json_text, "_C_MAKE_ENCODER", c_encoder)
    encode = compact_encoder(sort_keys=True)
    assert encode({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"\\u00e9"],"b":1}'


def test_on_cpython_the_encoder_is_set_up_once() -> None:
    assert json_text._C_MAKE_ENCODER is not None
    assert compact_encoder().__qualname__ == "compact_encoder.<locals>.encode"
