"""The function-level closure (golfpack.closure) on a toy package holding every dynamic
pattern it must not prune away: a lazy package `__getattr__`, a decorator registry, a dict
table, a table mutated after its definition, a module looked up by string (getattr on a
module), an import_module of a name held in a string constant, and a module imported only
for its side effect (a registration into another module). The pruned code runs from the
bundle's finder where the toy package is not importable, with the original's output, and
what nothing reaches is left out."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from golfpack.closure import function_closure
from golfpack.inline import FINDER, PACKAGES, ROOT

TOY = {
    "__init__.py": '''
        """A package whose names load lazily."""
        _LAZY = {"lazy_thing": "lazy"}

        def __getattr__(name):
            if name in _LAZY:
                import importlib
                return getattr(importlib.import_module(f"toy.{_LAZY[name]}"), name)
            raise AttributeError(name)
        ''',
    "lazy.py": '''
        def lazy_thing():
            return "lazy"

        def lazy_unused():
            return "UNUSED_LAZY"
        ''',
    "reg.py": '''
        MODES = {}

        def register(name):
            def wrap(f):
                MODES[name] = f
                return f
            return wrap

        @register("a")
        def _a():
            return 1

        @register("b")
        def _b():
            return 2

        def run(name):
            return MODES[name]()

        def reg_unused():
            return "UNUSED_REG"
        ''',
    "table.py": '''
        from toy.helpers import twice

        def _x():
            return "x"

        def _z():
            return "z"

        CODECS = {"x": _x}
        CODECS["z"] = _z

        def encode(name):
            return twice(CODECS[name]())

        BIG_UNUSED = ["UNUSED_TABLE"] * 3
        ''',
    "helpers.py": '''
        import math

        def twice(s):
            return s * 2

        def helper_unused():
            return math.pi, "UNUSED_HELPER"
        ''',
    "dyn.py": '''
        def by_name(n):
            import toy.ops as ops
            return getattr(ops, n)()

        def dyn_unused():
            return "UNUSED_DYN"
        ''',
    "ops.py": '''
        def f():
            return "f"

        def g():
            return "g"
        ''',
    "arch.py": '''
        import importlib

        DEFAULT = "toy.models:Net"

        def build(spec=DEFAULT):
            mod, attr = spec.split(":")
            return getattr(importlib.import_module(mod), attr)()
        ''',
    "models.py": '''
        class Net:
            v = 7

        class Unused:
            w = "UNUSED_MODEL"
        ''',
    "side.py": '''
        from toy.reg import MODES

        MODES["c"] = lambda: 3
        ''',
    "uses.py": '''
        from toy import side  # registers mode "c"

        def go():
            return "go"
        ''',
}
SCRIPT = '''
from toy import lazy_thing
from toy.reg import run
from toy.table import encode
from toy.dyn import by_name
from toy.arch import build
import toy.uses

print(lazy_thing(), run("a"), run("b"), run("c"), encode("x"), encode("z"), by_name("g"),
      build().v, toy.uses.go())
'''


def _toy(tmp_path):
    pkg = tmp_path / "src" / "toy"
    pkg.mkdir(parents=True)
    for name, text in TOY.items():
        (pkg / name).write_text(textwrap.dedent(text))
    return tmp_path / "src"


def test_toy_closure_keeps_every_dynamic_path_and_drops_the_rest(tmp_path):
    src = _toy(tmp_path)
    script = textwrap.dedent(SCRIPT)
    want = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=src)
    assert want.returncode == 0, want.stderr
    sources = function_closure(script, "<toy>", root=src, packages=("toy",))
    assert {"toy.lazy", "toy.reg", "toy.models", "toy.ops", "toy.side"} <= set(sources)
    carried = "".join(t for _, t in sources.values())
    for dropped in ("UNUSED_LAZY", "UNUSED_REG", "UNUSED_TABLE", "UNUSED_HELPER",
                    "UNUSED_DYN", "UNUSED_MODEL", "A package whose"):
        assert dropped not in carried, dropped
    assert 'def g():' in sources["toy.ops"][1]  # getattr(module, name): the module whole
    bundle = tmp_path / "bundle.py"
    bundle.write_text(FINDER % repr(sources) + script)
    got = subprocess.run([sys.executable, "-I", "-S", str(bundle)], capture_output=True,
                         text=True, cwd=tmp_path)  # toy is not importable from there
    assert got.returncode == 0, got.stderr
    assert got.stdout == want.stdout == "lazy 1 2 3 xx zz g 7 go\n"


def test_globals_and_star_imports_keep_their_module_whole(tmp_path):
    src = _toy(tmp_path)
    (src / "toy" / "glob.py").write_text("A = 1\nB = 2\n\ndef pick(n):\n"
                                         "    return globals()[n]\n")
    (src / "toy" / "star.py").write_text("from toy.ops import *\n")
    script = "from toy.glob import pick\nfrom toy.star import f\nprint(pick('B'), f())\n"
    sources = function_closure(script, "<t>", root=src, packages=("toy",))
    assert "B = 2" in sources["toy.glob"][1] and "def g" in sources["toy.ops"][1]


def test_the_real_lazy_scorer_import_is_served():
    """`from golfeval.score import score_tokens` goes through the package's __getattr__:
    the closure carries golfeval.score.core, which no import statement names."""
    sources = function_closure("from golfeval.score import score_tokens\n", "<s>",
                               root=ROOT, packages=PACKAGES)
    assert "def score_tokens" in sources["golfeval.score.core"][1]
    assert "def __getattr__" in sources["golfeval.score"][1]
    assert "golfeval.score.evaluate" not in sources


def test_units_are_cut_at_the_lines_ast_counts(tmp_path):
    """A string holding a character str.splitlines breaks at (U+2028, form feed, U+0085)
    does not shift the cut: each kept function comes out whole and runs."""
    src = _toy(tmp_path)
    (src / "toy" / "seps.py").write_text(
        'A = "a\u2028b\x0cc\x85d"\n\n\ndef keep():\n    return len(A)\n\n\n'
        'def drop():\n    return "UNUSED_SEPS"\n', encoding="utf-8")
    script = "from toy.seps import keep\nprint(keep())\n"
    sources = function_closure(script, "<t>", root=src, packages=("toy",))
    text = sources["toy.seps"][1]
    assert "def keep():\n    return len(A)\n" in text and "UNUSED_SEPS" not in text
    bundle = tmp_path / "bundle.py"
    bundle.write_text(FINDER % repr(sources) + script, encoding="utf-8")
    got = subprocess.run([sys.executable, "-I", "-S", str(bundle)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "7\n"
