"""The golf code a script runs, carried inside its bundle as source served by a meta-path
finder placed first, so what runs is exactly what is counted.

Two ways to choose that code: `pruned_sources`, the function-level closure of what the
script calls (golfpack.closure, the default), and `whole_sources`, the import closure of the
golf modules it imports (every golfpack/golfeval/trainer module reachable through any
import, at module level or inside functions, plus parent packages, carried whole): the
fallback `--whole-modules`, an over-count, never an under-count.

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


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of module `name` under `root` (its .py, or its package's __init__.py)."""
    base = root.joinpath(*name.split("."))
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


def whole_sources(script: bytes, path: str = "<script>") -> dict[str, tuple[bool, str]]:
    """{module: (is_package, source)} of the whole-module import closure of `script`, with
    the modules the function-level closure reaches dynamically (a package's lazy
    `__getattr__`), which no import statement names."""
    roots = set(script_roots(script, path)) | set(pruned_sources(script, path))
    return {name: (p.name == "__init__.py", p.read_text(encoding="utf-8"))
            for name, p in closure(sorted(roots)).items()}


def pruned_sources(script: bytes, path: str = "<script>") -> dict[str, tuple[bool, str]]:
    """{module: (is_package, source)} of the golf functions `script` runs (golfpack.closure)."""
    from golfpack.accounting import source_text
    from golfpack.closure import function_closure

    text = source_text(script, path)  # the encoding the file declares, as read_source checked
    try:
        return function_closure(text, path, root=ROOT, packages=PACKAGES, data=DATA)
    except SyntaxError as exc:
        raise GolfError(f"{path}: syntax error on line {exc.lineno}") from None


def _data_modules() -> set[str]:
    return {d for ds in DATA.values() for d in ds}


def module_texts(sources: dict[str, tuple[bool, str]], minify: bool = False) -> dict:
    """{module: (is_package, text as carried)}: minified when asked (data modules, which are
    read rather than run, stay verbatim)."""
    from golfpack.accounting import minify_source

    out, data = {}, _data_modules()
    for name, (is_pkg, text) in sources.items():
        if minify and text and name not in data:
            text = minify_source(text.encode("utf-8"), name).decode("utf-8")
        out[name] = (is_pkg, text)
    return out


def finder_source(texts: dict[str, tuple[bool, str]]) -> str:
    """The prelude serving `texts` (module_texts) from inside the bundle."""
    return FINDER % repr(texts) if texts else ""


def package_sizes(texts: dict[str, tuple[bool, str]]) -> dict[str, dict]:
    """{package: {"modules", "bytes"}} of the carried module texts (UTF-8 bytes)."""
    out = {}
    for name, (_, text) in texts.items():
        row = out.setdefault(name.split(".")[0], {"modules": 0, "bytes": 0})
        row["modules"] += 1
        row["bytes"] += len(text.encode("utf-8"))
    return out
