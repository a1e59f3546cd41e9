"""Tests of nbflow.graph.fingerprint: what changes a step's code fingerprint and what not."""

from __future__ import annotations

import dis
import functools
import importlib.util
import inspect
import itertools
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from nbflow.graph import source
from nbflow.graph.fingerprint import code_fingerprint, fingerprint_parts, normalized_source

_counter = itertools.count()

Loader = Callable[[str], ModuleType]


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Loader:
    """Write ``src`` to a fresh file and import it as a fresh module (source readable)."""

    def _load(src: str) -> ModuleType:
        n = next(_counter)
        name = f"nbflow_fp_case_{n}"
        folder = tmp_path / f"v{n}"
        folder.mkdir()
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(src))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return _load


def cell(src: str, filename: str = "<cell-1>") -> dict[str, Any]:
    """Run ``src`` like a notebook cell: in a ``__main__`` namespace, source not readable."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(src), filename, "exec"), namespace)
    return namespace


def fp(load: Loader, src: str, name: str = "step", **kwargs: Any) -> str:
    return code_fingerprint(getattr(load(src), name), **kwargs)


# -- the function's own source ---------------------------------------------------------

PLAIN = """
def step(data, window=30):
    total = sum(data[-window:])
    return {"total": total, "n": len(data)}
"""

DRESSED = '''
import functools


def deco(f):
    return f


@deco
@functools.lru_cache
def step(data,
         window = 30):
    """Sum the last window values."""
    # a comment that does not matter
    total = sum( data[ -window : ] )   # trailing comment


    return {'total': total,
            'n': len(data)}
'''


def test_comments_docstrings_formatting_and_decorators_do_not_count(load: Loader) -> None:
    assert fp(load, PLAIN) == fp(load, DRESSED)


def test_a_code_change_counts(load: Loader) -> None:
    changed = PLAIN.replace("sum(data[-window:])", "sum(data[-window:]) + 1")
    assert fp(load, PLAIN) != fp(load, changed)
    assert fp(load, PLAIN) != fp(load, PLAIN.replace("window=30", "window=7"))


def test_redefining_the_same_code_gives_the_same_fingerprint(load: Loader) -> None:
    assert fp(load, PLAIN) == fp(load, PLAIN)


def test_fingerprint_is_a_128_bit_hex_digest(load: Loader) -> None:
    digest = fp(load, PLAIN)
    assert len(digest) == 32
    int(digest, 16)


def test_normalized_source_strips_decorators_docstrings_and_comments(load: Loader) -> None:
    source = normalized_source(load(DRESSED).step)
    assert source.startswith("def step(data, window=30):")
    assert "@" not in source and "comment" not in source and "Sum the last" not in source
    assert source == normalized_source(load(PLAIN).step)


def test_docstring_only_function_normalizes_like_pass(load: Loader) -> None:
    a = load('def step():\n    """Nothing yet."""\n')
    b = load("def step():\n    pass\n")
    assert normalized_source(a.step) == normalized_source(b.step) == "def step():\n    pass"


def test_method_source_is_dedented(load: Loader) -> None:
    module = load(
        """
        class Holder:
            def step(self, x):
                s = '''
        not indented
        '''
                return s + x
        """
    )
    assert normalized_source(module.Holder.step).startswith("def step(self, x):")


def test_lambda_source_is_located(load: Loader) -> None:
    module = load("double = lambda x: x * 2  # a lambda\ntriple = lambda x: x * 3\n")
    assert normalized_source(module.double) == "lambda x: x * 2"
    assert code_fingerprint(module.double) != code_fingerprint(module.triple)


# -- helpers, constants, closures ------------------------------------------------------

CHAIN = """
import math

def c(x):
    return x * 2

def b(x):
    return c(x) + 1

def a(x):
    return b(x) - math.pi

def unrelated():
    return "left alone"

def step(data):
    return [a(x) for x in data]
"""


def test_a_transitive_helper_change_counts(load: Loader) -> None:
    changed = CHAIN.replace("return x * 2", "return x * 3")
    assert fp(load, CHAIN) != fp(load, changed)


def test_an_unrelated_function_change_does_not_count(load: Loader) -> None:
    changed = CHAIN.replace('"left alone"', '"edited"')
    assert fp(load, CHAIN) == fp(load, changed)


def test_helper_comments_do_not_count(load: Loader) -> None:
    changed = CHAIN.replace("return x * 2", "# double it\n    return x*2  # really")
    assert fp(load, CHAIN) == fp(load, changed)


def test_fingerprint_parts_name_every_part(load: Loader) -> None:
    parts = fingerprint_parts(load(CHAIN).step)
    assert set(parts) == {"<self>", "a", "b", "c"}  # not math, not unrelated
    assert parts["c"] == "def c(x):\n    return x * 2"
    assert parts["<self>"].startswith("def step(data):")


CONSTANTS = """
THRESHOLD = 0.5
LABELS = {"b": (1, 2.0), "a": [True, None, b"raw"], "c": frozenset({"x", "y", "z"})}

def step(values):
    return [v for v in values if v > THRESHOLD], LABELS
"""


def test_a_constant_change_counts(load: Loader) -> None:
    base = fp(load, CONSTANTS)
    assert base != fp(load, CONSTANTS.replace("THRESHOLD = 0.5", "THRESHOLD = 0.7"))
    assert base != fp(load, CONSTANTS.replace('b"raw"', 'b"cooked"'))
    reordered = CONSTANTS.replace(
        'LABELS = {"b": (1, 2.0), "a": [True, None, b"raw"], "c": frozenset({"x", "y", "z"})}',
        'LABELS = {"c": frozenset({"z", "y", "x"}), "a": [True, None, b"raw"], "b": (1, 2.0)}',
    )
    assert reordered != CONSTANTS
    assert base == fp(load, reordered)  # equal dicts and sets, written in another order
    assert base != fp(load, CONSTANTS.replace("(1, 2.0)", "(1, 2)"))  # 2 is not 2.0 here


def test_a_constant_read_by_a_helper_counts_and_is_named(load: Loader) -> None:
    src = """
    LIMIT = 10

    def clip(x):
        return min(x, LIMIT)

    def step(values):
        return [clip(v) for v in values]
    """
    assert fp(load, src) != fp(load, src.replace("LIMIT = 10", "LIMIT = 11"))
    assert set(fingerprint_parts(load(src).step)) == {"<self>", "clip", "LIMIT"}


def test_a_constant_read_through_a_closure_counts(load: Loader) -> None:
    src = """
    def make(factor):
        def step(values):
            return [v * factor for v in values]
        return step

    step = make(3)
    """
    assert fp(load, src) != fp(load, src.replace("make(3)", "make(4)"))
    assert "factor" in fingerprint_parts(load(src).step)


def test_a_helper_read_through_a_closure_is_followed(load: Loader) -> None:
    src = """
    def helper(v):
        return v + 1

    def make():
        h = helper
        def step(values):
            return [h(v) for v in values]
        return step

    step = make()
    """
    assert fp(load, src) != fp(load, src.replace("v + 1", "v + 2"))


def test_a_default_taken_from_a_constant_counts(load: Loader) -> None:
    # The source reads `n=N` either way: only the evaluated default differs.
    src = """
    N = 5

    def helper(x, n=N):
        return x[:n]

    def step(data):
        return helper(data)
    """
    assert fp(load, src) != fp(load, src.replace("N = 5", "N = 6"))


def test_modules_and_foreign_functions_are_not_followed(load: Loader) -> None:
    src = """
    import math
    import os.path
    from json import dumps

    def step(x):
        return math.sqrt(x), os.path.join("a", "b"), dumps(x), len([x])
    """
    parts = fingerprint_parts(load(src).step)
    assert set(parts) == {"<self>"}


def test_data_objects_are_hashed_by_content(load: Loader) -> None:
    src = """
    class Frame:
        def __init__(self, rows):
            self.rows = rows

    DATA = list(range(50_000))
    TABLE = Frame(DATA)

    def step():
        return DATA[0], TABLE.rows
    """
    module = load(src)
    parts = fingerprint_parts(module.step)
    assert parts["DATA"].startswith("data:") and parts["TABLE"].startswith("data:")
    assert "Frame" in parts  # the class of a data global is code the step runs
    module.DATA.append(-1)  # changed in place: both DATA and TABLE (which holds it) change
    changed = fingerprint_parts(module.step)
    assert changed["DATA"] != parts["DATA"] and changed["TABLE"] != parts["TABLE"]
    module.DATA.pop()
    assert fingerprint_parts(module.step) == parts


def test_constants_are_reread_on_every_call(load: Loader) -> None:
    module = load(CONSTANTS)
    before = code_fingerprint(module.step)
    module.THRESHOLD = 0.9
    assert code_fingerprint(module.step) != before
    module.THRESHOLD = 0.5
    assert code_fingerprint(module.step) == before


def test_mutual_and_self_recursion_terminate(load: Loader) -> None:
    src = """
    def even(n):
        return n == 0 or odd(n - 1)

    def odd(n):
        return n != 0 and even(n - 1)

    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    def step(n):
        return even(n), fact(n)
    """
    parts = fingerprint_parts(load(src).step)
    assert set(parts) == {"<self>", "even", "odd", "fact"}
    assert fp(load, src) != fp(load, src.replace("n != 0", "n > 0"))


def test_a_class_is_covered_by_its_methods(load: Loader) -> None:
    src = '''
    SCALE = 2

    def helper(x):
        return x + 1

    class Model:
        """A model."""

        bias = 1

        def fit(self, x):
            return helper(x) * SCALE + self.bias

    def step(x):
        return Model().fit(x)
    '''
    base = fp(load, src)
    assert base == fp(load, src.replace('"""A model."""', '"""Another doc."""'))
    assert base != fp(load, src.replace("+ self.bias", "- self.bias"))
    assert base != fp(load, src.replace("bias = 1", "bias = 2"))
    assert base != fp(load, src.replace("x + 1", "x + 2"))  # helper used by a method
    assert base != fp(load, src.replace("SCALE = 2", "SCALE = 3"))
    assert {"Model", "helper", "SCALE"} <= set(fingerprint_parts(load(src).step))


def test_decorated_helper_is_unwrapped(load: Loader) -> None:
    src = """
    import functools

    @functools.lru_cache(maxsize=None)
    def lookup(x):
        return x * 2

    def step(x):
        return lookup(x)
    """
    assert "lookup" in fingerprint_parts(load(src).step)
    assert fp(load, src) != fp(load, src.replace("x * 2", "x * 3"))


# -- exclude, options, version ---------------------------------------------------------


def test_excluded_names_are_not_followed(load: Loader) -> None:
    src = """
    WINDOW = 3

    def upstream():
        return [1, 2, 3]

    def step():
        return upstream()[:WINDOW]
    """
    module = load(src)
    assert set(fingerprint_parts(module.step)) == {"<self>", "upstream", "WINDOW"}
    exclude = {"upstream", "WINDOW"}
    assert set(fingerprint_parts(module.step, exclude=exclude)) == {"<self>"}
    edited = src.replace("[1, 2, 3]", "[4]").replace("WINDOW = 3", "WINDOW = 4")
    assert fp(load, src, exclude=exclude) == fp(load, edited, exclude=exclude)
    assert fp(load, src, exclude=["upstream"]) != fp(load, edited, exclude=["upstream"])


def test_options_change_the_fingerprint(load: Loader) -> None:
    module = load(PLAIN)
    plain = code_fingerprint(module.step)
    a = code_fingerprint(module.step, options={"retries": 1, "cache": True})
    b = code_fingerprint(module.step, options={"cache": True, "retries": 1})
    c = code_fingerprint(module.step, options={"retries": 2, "cache": True})
    assert a == b  # key order does not matter
    assert len({plain, a, c}) == 3


def test_version_overrides_the_code(load: Loader) -> None:
    one = load(PLAIN).step
    two = load(PLAIN.replace("sum(", "max(")).step
    assert code_fingerprint(one, version="1") == code_fingerprint(two, version="1")
    assert code_fingerprint(one, version="1") != code_fingerprint(one, version="2")
    assert code_fingerprint(one, version="1") != code_fingerprint(one)
    opts = {"retries": 3}
    assert code_fingerprint(one, version="1", options=opts) != code_fingerprint(one, version="1")


# -- functions without readable source -------------------------------------------------

EXEC_SRC = """
import math

SCALE = 2

def helper(x):
    return x * SCALE

def step(values, window=30):
    return [helper(v) for v in values[-window:] if v not in {"a", "b", "c"}], math.e
"""


def test_cell_functions_without_source_fall_back_to_bytecode() -> None:
    ns = cell(EXEC_SRC)
    assert normalized_source(ns["step"]) == ""
    parts = fingerprint_parts(ns["step"])
    assert parts["<self>"].startswith("bytecode:")
    assert set(parts) == {"<self>", "<self>.__defaults__", "helper", "SCALE"}


def test_bytecode_fallback_is_equal_for_equal_code_and_differs_otherwise() -> None:
    base = code_fingerprint(cell(EXEC_SRC)["step"])
    assert base == code_fingerprint(cell(EXEC_SRC, "<cell-2>")["step"])
    # Formatting is not code, even in the fallback (line numbers are left out).
    assert base == code_fingerprint(cell("\n\n" + EXEC_SRC + "\n# end\n")["step"])
    assert base != code_fingerprint(cell(EXEC_SRC.replace("x * SCALE", "x + SCALE"))["step"])
    assert base != code_fingerprint(cell(EXEC_SRC.replace("SCALE = 2", "SCALE = 3"))["step"])
    assert base != code_fingerprint(cell(EXEC_SRC.replace('"c"}', '"d"}'))["step"])
    assert base != code_fingerprint(cell(EXEC_SRC.replace("window=30", "window=7"))["step"])


def test_source_argument_makes_formatting_irrelevant() -> None:
    one = cell(EXEC_SRC)["step"]
    two = cell(EXEC_SRC.replace("x * SCALE", "x * SCALE  # same"))["step"]
    cell_text = EXEC_SRC.replace("[helper(v)", "[ helper( v )").replace(
        "def step(", "@flow.step(retries=2)\ndef step("
    )
    other_text = EXEC_SRC.replace("def step(values, window=30):", "def step(values,\n window=30):")
    assert normalized_source(one, cell_text) == normalized_source(two, other_text)
    assert normalized_source(one, cell_text).startswith("def step(values, window=30):")
    assert code_fingerprint(one, source=cell_text) == code_fingerprint(two, source=other_text)
    changed = cell_text.replace("values[-window:]", "values[:window]")
    assert code_fingerprint(one, source=cell_text) != code_fingerprint(one, source=changed)


def test_source_argument_without_the_def_normalizes_all_of_it() -> None:
    fn = cell("def step():\n    return 1\n")["step"]
    assert normalized_source(fn, "x = 1  # body\ny=2") == "x = 1\ny = 2"


def test_odd_callables_do_not_explode(load: Loader) -> None:
    module = load(PLAIN)
    assert code_fingerprint(len)
    partial_one = functools.partial(module.step, window=1)
    partial_two = functools.partial(module.step, window=2)
    assert code_fingerprint(partial_one) != code_fingerprint(partial_two)
    assert normalized_source(partial_one) == normalized_source(module.step)


# -- stability and cost ----------------------------------------------------------------

STABLE_SRC = """
NAMES = {"zeta": {"x", "y", "z"}, "alpha": frozenset({"p", "q"}), "mid": ("a", 1.5, None)}

def helper(x):
    return x in {"one", "two", "three", "four"}

def step(data, window=30):
    return [helper(v) for v in data if v not in NAMES], window
"""

_SCRIPT = """
import sys, textwrap
sys.path.insert(0, sys.argv[1])
import nbflow_fp_stable as m
from nbflow.graph.fingerprint import code_fingerprint
ns = {"__name__": "__main__"}
exec(compile(open(sys.argv[2]).read(), "<cell-7>", "exec"), ns)
print(code_fingerprint(m.step), code_fingerprint(ns["step"], options={"b": 1, "a": [1, 2]}))
"""


def test_fingerprints_are_stable_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    (tmp_path / "nbflow_fp_stable.py").write_text(STABLE_SRC)
    (tmp_path / "cell.py").write_text(STABLE_SRC)
    outputs = []
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(tmp_path), str(tmp_path / "cell.py")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.append(done.stdout.strip())
    assert len(set(outputs)) == 1
    source_based, bytecode_based = outputs[0].split()
    assert source_based != bytecode_based
    # ... and equal to what this process (another random seed) computes.
    ns = cell(STABLE_SRC, "<cell-7>")
    assert code_fingerprint(ns["step"], options={"a": [1, 2], "b": 1}) == bytecode_based


def test_warm_fingerprints_read_no_source_and_parse_nothing(
    load: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes a warm fingerprint cheap (its cost is measured in benchmarks/overhead.py):
    the source, its normalized form and the names the bytecode reads are cached per code
    object, so fingerprinting again reads no file, parses nothing, disassembles nothing."""
    module = load(CHAIN + CONSTANTS.replace("def step(", "def step2("))
    steps = [module.step, module.step2]
    exclude = {"upstream"}
    work: Counter[str] = Counter()

    def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            work[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(inspect, "getsource", counted("getsource", inspect.getsource))
    monkeypatch.setattr(source, "_normalize", counted("normalize", source._normalize))
    monkeypatch.setattr(dis, "get_instructions", counted("dis", dis.get_instructions))
    cold = [code_fingerprint(step, exclude=exclude) for step in steps]
    assert set(work) == {"getsource", "normalize", "dis"}  # the counters see the work
    work.clear()
    warm = [code_fingerprint(step, exclude=exclude) for step in steps]
    with_options = [code_fingerprint(s, options={"retries": 0}, exclude=exclude) for s in steps]
    assert warm == cold and with_options != cold
    assert work == Counter()


def test_odd_globals_are_left_alone(load: Loader) -> None:
    src = """
    class Proxy:
        def __getattr__(self, name):
            raise RuntimeError("do not touch")

        def __call__(self):
            return 1

    LAZY = Proxy()

    def step():
        return LAZY()
    """
    # Its __getattr__ is never asked (unwrap and the pickler look on the class): it is
    # data, hashed by content, and its class is code the step runs.
    parts = fingerprint_parts(load(src).step)
    assert set(parts) == {"<self>", "LAZY", "Proxy"}
    assert parts["LAZY"].startswith("data:")


_IPYTHON_SCRIPT = """
from IPython.core.interactiveshell import InteractiveShell
from nbflow.graph.fingerprint import code_fingerprint, fingerprint_parts

shell = InteractiveShell.instance()
shell.run_cell("T = 0.5\\ndef helper(x):\\n    return x * T\\n")
shell.run_cell("def step(data):\\n    '''Doc.'''\\n    return helper(data)\\n")
before = code_fingerprint(shell.user_ns["step"])
parts = fingerprint_parts(shell.user_ns["step"])
assert parts["<self>"] == "def step(data):\\n    return helper(data)", parts
assert set(parts) == {"<self>", "helper", "T"}, parts
shell.run_cell("def step(data):  # reformatted\\n    return helper( data )\\n")
assert code_fingerprint(shell.user_ns["step"]) == before
shell.run_cell("def helper(x):\\n    return x * T * 2\\n")
assert code_fingerprint(shell.user_ns["step"]) != before
print("ok")
"""


def test_functions_defined_in_ipython_cells_use_their_source() -> None:
    # In a subprocess: an InteractiveShell patches builtins and hooks of its process.
    if importlib.util.find_spec("IPython") is None:
        pytest.skip("IPython is not installed")
    done = subprocess.run(
        [sys.executable, "-c", _IPYTHON_SCRIPT], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
