"""The top-level statements of one Python module and what each one needs: the units the
function-level bundle pruner (golfpack.closure) keeps or drops.

A module is read with `ast`, never imported or run. Each top-level statement becomes a
Unit: the names it binds, every name it reads (function bodies, decorators, defaults and
base classes included), its attribute chains (`mod.sub.func`, resolved later against module
aliases), the imports inside it (function-local ones too), and the dynamic lookups the
pruner must not guess around (globals(), import_module, module `__getattr__`). Its kind says
when it must run:
  future  `from __future__` lines: always kept, first;
  doc     the module docstring: dropped unless the module reads `__doc__`;
  main    `if __name__ == "__main__":`: never runs inside a bundle, dropped;
  import  an import binding aliases: rewritten to the aliases that are needed;
  def     binds names and does nothing else: kept when one of its names is needed;
  attach  mutates a name the module defines (`TABLE[k] = v`, `SET.add(x)`): kept with it;
  effect  anything else (calls, registrations by decorator, cross-module mutation): kept
          whenever the module is loaded.
Assignments of names are taken to be free of side effects (constant tables, compiled
regexes); that is the one assumption the pruner makes about code it drops.
"""

from __future__ import annotations

import ast
import io
import re
from dataclasses import dataclass, field

# decorators that only wrap what they decorate (matched on the last dotted component)
PURE_DECORATORS = frozenset({
    "dataclass", "property", "staticmethod", "classmethod", "cache", "lru_cache",
    "cached_property", "wraps", "contextmanager", "asynccontextmanager", "no_grad",
    "inference_mode", "compile", "script", "abstractmethod", "overload", "total_ordering",
    "setter", "getter", "deleter", "singledispatch", "enable_grad", "final"})
# strings that may name code ("pkg.module:attr", "pkg.module.attr"); golfpack.closure keeps
# those that name a module of the packages it carries
CODE_STRING = re.compile(r"[A-Za-z_]\w*(\.\w+)*([.:]\w+)")
_DEFINING = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
             ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Pass)
_COMPOUND = (ast.If, ast.Try, ast.For, ast.While, ast.With)


@dataclass
class Unit:
    index: int
    start: int                      # first line, decorators included (1-based)
    end: int
    node: ast.stmt
    kind: str
    defines: set[str] = field(default_factory=set)
    attach: str | None = None       # the module-level name an "attach" unit mutates
    names: set[str] = field(default_factory=set)        # every Name read or written
    chains: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    bare: set[str] = field(default_factory=set)         # names used other than as `x.attr`
    imports: list[tuple] = field(default_factory=list)  # targets of nested imports
    local_aliases: dict[str, tuple] = field(default_factory=dict)
    dynamic: list[tuple] = field(default_factory=list)  # ("whole",) ("import", kind, value)
    strings: set[str] = field(default_factory=set)      # strings that may name code


def import_targets(node, package: str) -> list[tuple[str, tuple]]:
    """[(bound name, target)] of one import statement; targets are ("module", M) (for a
    plain `import a.b`: ("module", "a", "a.b"), binding `a` and running a.b),
    ("from", M, name) or ("star", M), with relative imports made absolute."""
    if isinstance(node, ast.Import):
        return [(a.asname, ("module", a.name)) if a.asname else
                (a.name.split(".")[0], ("module", a.name.split(".")[0], a.name))
                for a in node.names]
    mod = node.module or ""
    if node.level:
        base = package.split(".")[:max(0, len(package.split(".")) - node.level + 1)]
        mod = ".".join(base + ([mod] if mod else []))
    return [("*", ("star", mod)) if a.name == "*" else
            (a.asname or a.name, ("from", mod, a.name)) for a in node.names]


def _bound(stmt) -> set[str]:
    """Names a (possibly compound) statement binds at module level."""
    out = set()
    for node in _walk_no_defs(stmt):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(n for n, _ in import_targets(node, "") if n != "*")
    return out


def _walk_no_defs(stmt):
    """ast.walk that does not enter function or class bodies (their names are local)."""
    todo = [stmt]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node is not stmt:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(node.decorator_list)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _only_definitions(stmt) -> bool:
    """A compound statement whose every branch only imports, defines or assigns names."""
    for body in ("body", "orelse", "finalbody"):
        for s in getattr(stmt, body, []):
            if isinstance(s, _COMPOUND):
                if not _only_definitions(s):
                    return False
            elif not isinstance(s, _DEFINING) and not _is_docstring(s):
                return False
            elif isinstance(s, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and \
                    not all(isinstance(t, ast.Name) for t in _targets(s)):
                return False
    return all(_only_definitions(h) for h in getattr(stmt, "handlers", []))


def _targets(stmt) -> list:
    ts = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    out = []
    for t in ts:
        out.extend(t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])
    return out


def _is_docstring(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and isinstance(stmt.value.value, str)


def _is_main_guard(stmt) -> bool:
    t = stmt.test if isinstance(stmt, ast.If) else None
    return isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and \
        t.left.id == "__name__" and len(t.comparators) == 1 and \
        isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value == "__main__"


def _decorator_name(dec) -> str:
    dec = dec.func if isinstance(dec, ast.Call) else dec
    return dec.attr if isinstance(dec, ast.Attribute) else getattr(dec, "id", "")


def _chain(node) -> tuple[str, tuple[str, ...]] | None:
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return (node.id, tuple(reversed(attrs))) if isinstance(node, ast.Name) else None


_DATACLASS_MARKERS = {"ClassVar", "InitVar", "KW_ONLY"}


def _annotation_nodes(tree) -> set[int]:
    """ids of the nodes inside function-signature and variable annotations (strings under
    `from __future__ import annotations`, so never evaluated)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            anns = [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs
                    + [a.vararg, a.kwarg] if x is not None] + [node.returns]
            for ann in anns:
                if ann is not None:
                    out.update(id(n) for n in ast.walk(ann))
        elif isinstance(node, ast.AnnAssign) and not _DATACLASS_MARKERS & {
                getattr(n, "id", getattr(n, "attr", None)) for n in ast.walk(node.annotation)}:
            # a variable annotation (a dataclass field's type) is a string too; dataclasses
            # only look at the ClassVar/InitVar/KW_ONLY ones, which are kept
            out.update(id(n) for n in ast.walk(node.annotation))
    return out


def _dynamic_import(call, unit: Unit) -> None:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
    if name not in ("import_module", "__import__") or not call.args:
        return
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        unit.dynamic.append(("import", "const", arg.value))
    elif isinstance(arg, ast.JoinedStr):
        pat = "".join(re.escape(v.value) if isinstance(v, ast.Constant) else r"[\w.]+"
                      for v in arg.values)
        unit.dynamic.append(("import", "pattern", pat))
    else:
        unit.dynamic.append(("import", "any", None))


def _references(unit: Unit, package: str, skip: set[int]) -> None:
    """Fill a unit's names, chains, bare uses, nested imports, dynamic lookups, strings."""
    in_chain, seen_attr = set(), set()
    for node in ast.walk(unit.node):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Attribute) and id(node) not in seen_attr:
            c = _chain(node)
            inner = node.value
            while isinstance(inner, ast.Attribute):
                seen_attr.add(id(inner))
                inner = inner.value
            if c is not None:
                unit.chains.append(c)
                in_chain.add(id(inner))
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and node is not unit.node:
            for bound, target in import_targets(node, package):
                unit.local_aliases[bound] = target
                unit.imports.append(target)
        elif isinstance(node, ast.Call):
            fn = getattr(node.func, "id", None)
            if fn in ("globals", "locals") or (fn == "vars" and not node.args):
                unit.dynamic.append(("whole",))
            _dynamic_import(node, unit)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and CODE_STRING.fullmatch(node.value):
            unit.strings.add(node.value)
    for node in ast.walk(unit.node):
        if isinstance(node, ast.Name) and id(node) not in skip:
            unit.names.add(node.id)
            if id(node) not in in_chain:
                unit.bare.add(node.id)


def _mutated(targets) -> tuple[str, str | None]:
    """A mutation of one module-level object: "attach?" until the module's own names are
    known (then "attach", or "effect" when the object is imported from elsewhere)."""
    bases = set()
    for t in targets:
        while isinstance(t, (ast.Attribute, ast.Subscript)):
            t = t.value
        bases.add(t.id if isinstance(t, ast.Name) else None)
    if len(bases) != 1 or None in bases:
        return "effect", None
    return "attach?", bases.pop()


class ModuleInfo:
    """One module's units, the names each top-level unit binds, and its import aliases."""

    def __init__(self, name: str, text: str, filename: str, is_pkg: bool):
        self.name, self.text, self.is_pkg = name, text, is_pkg
        # lines as ast numbers them: split at \n, \r\n and \r only (str.splitlines also
        # splits at \f, \x1c-\x1e, \x85, \u2028, ... which may stand inside a string)
        self.lines = io.StringIO(text, newline="").readlines()
        self.package = name if is_pkg else name.rpartition(".")[0]
        tree = ast.parse(text, filename=filename)
        future = any(isinstance(s, ast.ImportFrom) and s.module == "__future__"
                     and any(a.name == "annotations" for a in s.names) for s in tree.body)
        skip = _annotation_nodes(tree) if future and "get_type_hints" not in text else set()
        self.units: list[Unit] = []
        self.defs: dict[str, list[int]] = {}
        self.aliases: dict[str, tuple] = {}
        self.shared_lines = False  # two statements on one line: cannot be cut apart
        for i, stmt in enumerate(tree.body):
            start = min([stmt.lineno] + [d.lineno for d in
                                         getattr(stmt, "decorator_list", [])])
            if self.units and start <= self.units[-1].end:
                self.shared_lines = True
            kind, attach = self._kind(stmt, text)
            unit = Unit(i, start, stmt.end_lineno, stmt, kind, attach=attach)
            unit.defines = _bound(stmt)
            if isinstance(stmt, (ast.Import, ast.ImportFrom)) or unit.kind in ("def", "effect"):
                for s in _walk_no_defs(stmt):
                    if isinstance(s, (ast.Import, ast.ImportFrom)):
                        self.aliases.update(import_targets(s, self.package))
            _references(unit, self.package, skip)
            self.units.append(unit)
        for u in self.units:
            if u.kind not in ("doc", "main", "future"):
                for n in u.defines:
                    self.defs.setdefault(n, []).append(u.index)
        own = {n for u in self.units if u.kind in ("def", "effect") for n in u.defines}
        for u in self.units:  # mutations of the module's own tables travel with them
            if u.kind == "attach?":
                u.kind = "attach" if u.attach in own else "effect"

    @staticmethod
    def _kind(stmt, text: str) -> tuple[str, str | None]:
        """(kind, the name an attach unit mutates)."""
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            return "future", None
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            return "import", None
        if _is_docstring(stmt):
            return ("effect" if "__doc__" in text else "doc"), None
        if _is_main_guard(stmt):
            return "main", None
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            pure = all(_decorator_name(d) in PURE_DECORATORS for d in stmt.decorator_list)
            return ("def" if pure else "effect"), None
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            ts = _targets(stmt)
            if all(isinstance(t, ast.Name) for t in ts):
                return "def", None
            return _mutated(ts)
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            c = _chain(stmt.value.func)
            if c is not None and c[1]:
                return _mutated([stmt.value.func])
        if isinstance(stmt, _COMPOUND) and _only_definitions(stmt):
            return "def", None
        return "effect", None

    def segment(self, unit: Unit) -> str:
        return "".join(self.lines[unit.start - 1:unit.end])
