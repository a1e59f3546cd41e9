"""Helpers keep their decorators in a reproduction: a helper decorated with
``functools.lru_cache`` or with a decorator of the notebook's own is defined again
decorated (the decorator is importable or recorded); one whose decorator reads a data
value is defined undecorated, as before, rather than storing that value."""

from __future__ import annotations

from pathlib import Path

from test_reproduce import run_script

import nbflow as nf

CACHED = """
    import functools
    import nbflow as nf
    flow = nf.Flow("cached", store="store.duckdb")

    @functools.lru_cache(maxsize=None)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    @flow.step
    def numbers():
        # without the cache, fib(200) would not finish: its own methods are asked first
        fib.cache_clear()
        value = fib(200)
        info = fib.cache_info()
        return {"fib": value, "size": info.currsize, "hits": info.hits}

    flow.run(progress=False)
    print(flow.latest_run().id)
"""


def test_a_helper_with_lru_cache_reproduces_identically_with_its_cache(tmp_path: Path) -> None:
    run_id = run_script(tmp_path, CACHED)
    with nf.open_store(tmp_path / "store.duckdb") as store:
        run = nf.get_run(run_id, store)
        entries = run.provenance().steps["numbers"].entries
        entry = entries["fib"]
        frame = run.reproduce(check_determinism=False)
        child = nf.get_run(frame.attrs["reproduction"], store)
        assert child.outputs["numbers"] == run.outputs["numbers"]
        assert child.outputs["numbers"]["size"] == 201
        # the reproduction's own record keeps the decorator, too
        again = child.provenance().steps["numbers"].entries["fib"]
    assert entry["kind"] == "function"
    assert entry["source"].startswith("@functools.lru_cache(maxsize=None)\ndef fib(n):")
    assert entries["functools"] == {
        "kind": "import",
        "module": "functools",
    }
    assert again["source"] == entry["source"]
    assert frame["status"].tolist() == ["identical"], frame["reason"].tolist()


def test_a_notebooks_own_decorator_is_recorded_and_kept(tmp_path: Path) -> None:
    code = """
        import functools
        from fractions import Fraction
        from functools import wraps
        import nbflow as nf
        flow = nf.Flow("decorated", store="store.duckdb")
        FACTOR = Fraction(3)  # a data value, not a constant

        def doubled(func):
            @wraps(func)
            def wrapper(*args):
                return 2 * func(*args)
            return wrapper

        def scaled(factor):
            def decorate(func):
                @functools.wraps(func)
                def wrapper(*args):
                    return factor * func(*args)
                return wrapper
            return decorate

        SIDE_FACTOR = 10

        @doubled
        @scaled(SIDE_FACTOR)
        def area(side):
            return side * side

        def tagged(func):
            func.tagged = True
            return func

        @tagged
        @scaled(FACTOR)
        def perimeter(side):
            return 4 * side

        @flow.step
        def shape():
            return {"area": area(3), "perimeter": perimeter(3)}

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    run_id = run_script(tmp_path, code)
    with nf.open_store(tmp_path / "store.duckdb") as store:
        run = nf.get_run(run_id, store)
        entries = run.provenance().steps["shape"].entries
        frame = run.reproduce(check_determinism=False)
        assert run.outputs["shape"] == {"area": 180, "perimeter": 36}
        child = nf.get_run(frame.attrs["reproduction"], store)
        reproduced = child.outputs["shape"]
    assert entries["area"]["source"].startswith("@doubled\n@scaled(SIDE_FACTOR)\ndef area(side):")
    assert entries["doubled"]["kind"] == entries["scaled"]["kind"] == "function"
    # the decorators are defined before the helper they decorate
    names = list(entries)
    assert names.index("doubled") < names.index("area")
    assert names.index("scaled") < names.index("area")
    # a decorator reading a data value is left out, and the value is not stored for it
    assert entries["perimeter"]["source"].startswith("@tagged\ndef perimeter(side):")
    assert "FACTOR" not in entries
    assert entries["SIDE_FACTOR"] == {"kind": "constant", "literal": "10"}
    verdict = frame.set_index("step").loc["shape"]
    assert verdict["status"] == "differs"
    assert "its decorator @scaled(FACTOR) reads 'FACTOR'" in verdict["reason"]
    assert reproduced == {"area": 180, "perimeter": 12}
