"""The golf code a script runs, carried inside its bundle: the import closure of the golf
modules the script imports (every golfpack/golfeval/trainer module reachable through any
import, at module level or inside functions, plus each one's parent packages), embedded as
source and served by a meta-path finder placed first, so what runs is exactly what is
counted. Whole modules are carried, not single functions: an over-count, never an under-count.

Modules that read files beside their source are served through the loader's get_source
(golfpack.decoder reads its template that way); other data files are not carried.
"""

from __future__ import annotations

import ast
from pathlib import Path

from golfpack.errors import GolfError

PACKAGES = ("golfpack", "golfeval", "trainer")
ROOT = Path(__file__).resolve().parents[1]
# source files a module reads as data (module -> modules whose source it needs)
DATA = {"golfpack.decoder": ("golfpack.decoder.template",)}

FINDER = '''import sys as _s, importlib.abc as _a, importlib.util as _u
class _GolfSource(_a.MetaPathFinder, _a.Loader):
    def __init__(self, src): self.src, self.u = src, _u
    def find_spec(self, name, path=None, target=None):
        if name in self.src:
            return self.u.spec_from_loader(name, self, is_package=self.src[name][0])
    def create_module(self, spec): return None
    def get_source(self, name): return self.src[name][1]
    def exec_module(self, m):
        exec(compile(self.src[m.__name__][1], "<golf " + m.__name__ + ">", "exec"), m.__dict__)
_s.meta_path.insert(0, _GolfSource(%s))
del _s, _a, _u, _GolfSource
'''


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path, name: str) -> set[str]:
    """Golf modules (and `from a import b` submodules) imported anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES and module_file(m) is not None}


def closure(roots) -> dict[str, Path]:
    """{module: file} of every golf module reachable from `roots`, parents included."""
    todo, out = [r for r in roots if module_file(r) is not None], {}
    while todo:
        name = todo.pop()
        if name in out:
            continue
        path = module_file(name)
        out[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += list(_imports(path, name)) + list(DATA.get(name, ()))
    return dict(sorted(out.items()))


def script_roots(source: bytes, path: str = "<script>") -> list[str]:
    """The golf modules a script imports."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise GolfError(f"{path}: syntax error on line {exc.lineno}") from None
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return sorted(m for m in found if m.split(".")[0] in PACKAGES and module_file(m))


def finder_source(modules: dict[str, Path], minify: bool = False) -> tuple[str, dict]:
    """The prelude serving `modules` -> (source, {package: bytes of its modules' text})."""
    from golfpack.accounting import minify_source

    table, sizes = {}, {}
    for name, path in modules.items():
        text = path.read_bytes()
        if minify and not name.endswith(".template"):  # the template is read, not run
            text = minify_source(text, str(path))
        table[name] = (path.name == "__init__.py", text.decode("utf-8"))
        top = name.split(".")[0]
        sizes[top] = sizes.get(top, 0) + len(text)
    return FINDER % repr(table), sizes
