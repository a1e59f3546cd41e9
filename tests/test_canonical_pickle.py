"""Pickled values hash the same in every process: sets are written in a canonical order.

pickle writes a set's elements in iteration order, which for strings follows the
process's hash seed: without the canonical order, the same set of strings had a new
content hash in every kernel, and its dependents missed the cache.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import pytest

from nbflow.values import content_hash, decode, encode
from nbflow.values.pickling import canonical_dumps

SEEDS = ["0", "1", "2", "3", "4", "5", "6", "7"]

# A module a subprocess imports, so its class is pickled by reference (a class defined in
# __main__ travels by value, with an id cloudpickle draws at random).
HOLDERS = '''
class Holder:
    """An object holding a set and a frozenset."""

    def __init__(self):
        self.tags = {f"tag{i}" for i in range(40)}
        self.pairs = frozenset((f"k{i}", i) for i in range(10))


class Tags(set):
    """A set subclass with an attribute."""
'''

HASHES = """
import json
from holders import Holder, Tags
from nbflow.values import content_hash

tagged = Tags(f"t{i}" for i in range(30))
tagged.owner = "me"
values = {
    "set of strings": {f"s{i}" for i in range(100)},
    "frozenset in a dict": {"cfg": frozenset({"alpha", "beta", "gamma", "delta"})},
    "object holding a set": Holder(),
    "set of tuples": {(f"a{i}", f"b{i}") for i in range(30)},
    "mixed types": {1, "x", b"y", 2.5, None, ("t", 1)},
    "nested frozensets": frozenset({frozenset({"a", "b"}), frozenset({"c"})}),
    "set subclass": tagged,
}
print(json.dumps({name: content_hash(value) for name, value in values.items()}))
"""


def run_python(code: str, folder: Path, seed: str, **extra: str) -> str:
    env = {
        **os.environ,
        "PYTHONHASHSEED": seed,
        "PYTHONPATH": os.pathsep.join([str(folder), *sys.path]),
        **extra,
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_values_holding_sets_hash_the_same_whatever_the_hash_seed(tmp_path: Path) -> None:
    (tmp_path / "holders.py").write_text(HOLDERS)
    outputs = [run_python(HASHES, tmp_path, seed) for seed in SEEDS]
    assert len(set(outputs)) == 1, outputs


FLOW = """
import os
import nbflow as nf

flow = nf.Flow("vocabulary", store=os.environ["STORE"])


@flow.step(cache=False)  # runs in every process: its output is hashed in each
def words():
    return {"apple", "banana", "cherry", "damson", "elder", "fig", "grape"}


@flow.step
def longest(words):
    return max(sorted(words), key=len)
"""

RUN = """
import json
import vocabulary
run = vocabulary.flow.run(progress=False)
steps = run.steps.drop_duplicates("step", keep="last")
print(json.dumps([run["longest"], dict(zip(steps["step"], steps["status"]))]))
"""


def test_a_step_reading_a_set_is_a_cache_hit_in_another_process(tmp_path: Path) -> None:
    (tmp_path / "vocabulary.py").write_text(FLOW)
    store = str(tmp_path / "store.duckdb")
    first = run_python(RUN, tmp_path, "1", STORE=store)
    second = run_python(RUN, tmp_path, "2", STORE=store)
    assert first == '["banana", {"words": "completed", "longest": "completed"}]'
    assert second == '["banana", {"words": "completed", "longest": "cached"}]'


# -- in one process ------------------------------------------------------------------------


class Box:
    def __init__(self, content: object) -> None:
        self.content = content

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and other.content == self.content


class Tags(set):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"b", "a", "c"},
        frozenset({3, 1, 2.5, -7}),
        {"nested": [{"x", "y"}, (frozenset({b"p", b"q"}),)]},
        {frozenset({"a"}), frozenset({"a", "b"}), frozenset()},
        {1, "one", b"one", None, (1, "one")},
        Box({"inside", "an", "object"}),
        set(),
    ],
    ids=repr,
)
def test_a_value_with_sets_unpickles_to_an_equal_value(value: object) -> None:
    encoded = encode(value, step="s")
    back = decode(encoded.ref, data=encoded.data)
    assert back == value and type(back) is type(value)


def test_a_set_holding_nan_is_ordered_by_its_elements_pickles() -> None:
    nan = float("nan")
    first, second = {nan, 1.0, -2.0}, {-2.0, 1.0}
    second.add(nan)
    assert canonical_dumps(first) == canonical_dumps(second)
    back = pickle.loads(canonical_dumps(first))
    assert sorted(x for x in back if x == x) == [-2.0, 1.0] and len(back) == 3


def test_the_order_does_not_depend_on_how_the_set_was_built() -> None:
    words = [f"w{i}" for i in range(200)]
    grown, shrunk = set(words), set([*words, "extra"])
    shrunk.discard("extra")  # same elements, other table history
    assert (
        canonical_dumps(grown) == canonical_dumps(set(reversed(words))) == canonical_dumps(shrunk)
    )
    assert content_hash({"k": grown}) == content_hash({"k": shrunk})


def test_a_set_subclass_keeps_its_class_and_attributes() -> None:
    tags = Tags({"b", "a"})
    tags.owner = "me"  # type: ignore[attr-defined]
    back = pickle.loads(canonical_dumps(tags))
    assert type(back) is Tags and back == {"a", "b"} and back.owner == "me"


def test_shared_and_recursive_references_survive() -> None:
    shared = {"x", "y"}
    loop: list[object] = [shared, shared]
    loop.append(loop)
    back = pickle.loads(canonical_dumps(loop))
    assert back[0] == shared and back[0] is back[1] and back[2] is back


def test_functions_and_classes_defined_here_still_travel_by_value_next_to_a_set() -> None:
    offset = 3

    class Local:  # not importable: cloudpickle sends it by value
        def __init__(self) -> None:
            self.tags = frozenset({"l1", "l2"})

    value = {"tags": {"t1", "t2"}, "shift": lambda v: v + offset, "local": Local()}
    back = cloudpickle.loads(canonical_dumps(value))
    assert back["tags"] == {"t1", "t2"} and back["shift"](1) == 4
    assert type(back["local"]).__name__ == "Local" and back["local"].tags == {"l1", "l2"}


def test_a_value_without_sets_pickles_exactly_as_before() -> None:
    value = {"rows": [(1, "a"), (2, "b")], "box": Box([1, 2]), "f": lambda: 1}
    assert canonical_dumps(value) == cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def test_a_value_too_deep_for_the_ordered_pickler_is_still_stored() -> None:
    deep: object = {"leaf"}
    for _ in range(sys.getrecursionlimit() // 4):
        deep = Box(deep)
    back = pickle.loads(canonical_dumps(deep))
    assert back == deep
