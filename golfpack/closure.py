"""The golf functions a script runs, and nothing else: the function-level closure a bundle
carries (golfpack.bundle), so that a submission counts the encoder, decoder or scorer it
calls instead of every module those live in.

Starting from the script (kept whole), a name a kept unit uses pulls in the top-level
statement(s) defining it (golfpack.symbols), across modules: `from x import y`, `import x`
+ `x.y`, function-local imports, re-exports through packages. A module is loaded (its
effect statements kept, its parent packages carried) once anything of it is needed.
Dynamic lookups are never guessed around:
  - a golf module used as a value (`getattr(mod, name)`, passed along) is kept whole;
  - globals()/locals()/vars() keep their own module whole;
  - import_module("golfpack.x") keeps golfpack.x whole; an f-string pattern keeps every
    golf module it can name (inside a module `__getattr__`, only the requested names);
  - import_module(anything else) makes every golf-looking string in the kept code
    ("trainer.model:GPT") a reference, until nothing new is reached;
  - a name a module neither defines nor serves keeps that module whole.
When in doubt a statement is kept: a bundle that fails to run is worse than a larger one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from golfpack.inline import module_file
from golfpack.symbols import ModuleInfo, import_targets


class Closure:
    """Kept units per module, grown from roots by `add_script`; `sources()` emits them."""

    def __init__(self, root: Path, packages, data=None):
        self.root, self.packages, self.data = Path(root), tuple(packages), data or {}
        self.infos: dict[str, ModuleInfo | None] = {}
        self.kept: dict[str, set[int]] = {}        # module -> indices of kept units
        self.aliases: dict[tuple, set | None] = {}  # (module, import unit) -> kept names
        self.bare: dict[tuple, set[str]] = {}       # (module, import unit) -> bare imports
        self.loaded: set[str] = set()
        self.whole: set[str] = set()
        self.todo: list[tuple[str, int]] = []
        self.any_import = False                     # import_module(<computed name>) seen
        self._strings_done: set[str] = set()
        self._effects: dict[str, bool] = {}

    # -- modules ---------------------------------------------------------------------
    def file(self, name: str) -> Path | None:
        if not name or name.split(".")[0] not in self.packages:
            return None
        return module_file(name, self.root)

    def info(self, name: str) -> ModuleInfo | None:
        if name not in self.infos:
            p = self.file(name)
            self.infos[name] = None if p is None else ModuleInfo(
                name, p.read_text(encoding="utf-8"), str(p), p.name == "__init__.py")
        return self.infos[name]

    def all_modules(self) -> list[str]:
        out = []
        for pkg in self.packages:
            for p in sorted((self.root / pkg).rglob("*.py")):
                parts = p.relative_to(self.root).with_suffix("").parts
                out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        return out

    # -- growing ---------------------------------------------------------------------
    def add_script(self, text: str, filename: str) -> None:
        """Keep every statement of the script (named __main__) and all it reaches."""
        info = ModuleInfo("__main__", text, filename, False)
        self.infos["__main__"] = info
        for u in info.units:
            self.keep("__main__", u.index)
        self.run()

    def load(self, name: str) -> None:
        info = self.info(name)
        if info is None or name in self.loaded:
            return
        self.loaded.add(name)
        if "." in name:
            self.load(name.rpartition(".")[0])
        if info.shared_lines:
            self.keep_whole(name)
        for u in info.units:
            if u.kind in ("future", "effect"):
                self.keep(name, u.index)
            elif u.kind == "import":  # importing a module with side effects runs them
                for mod in self._imported(info, u):
                    if self.has_effects(mod):
                        self.bare.setdefault((name, u.index), set()).add(mod)
                        self.load(mod)

    def keep_whole(self, name: str) -> None:
        info = self.info(name)
        if info is None or name in self.whole:
            return
        self.whole.add(name)
        self.load(name)
        for u in info.units:
            self.keep(name, u.index)

    def need(self, mod: str, name: str) -> None:
        """`name` as found in module `mod` (a definition, a submodule, or served)."""
        info = self.info(mod)
        if info is None:
            return
        self.load(mod)
        if name in info.defs:
            for i in info.defs[name]:
                self.keep(mod, i, name)
            for u in info.units:
                if u.kind == "attach" and u.attach == name:
                    self.keep(mod, u.index)
        elif self.file(f"{mod}.{name}"):
            self.load(f"{mod}.{name}")
        elif "__getattr__" in info.defs:
            self.need(mod, "__getattr__")
            self._lazy(info, name)
        else:
            self.keep_whole(mod)

    def _lazy(self, info: ModuleInfo, name: str) -> None:
        """A module `__getattr__` importing by pattern: the requested name where it lives."""
        found = False
        for i in info.defs["__getattr__"]:
            for d in info.units[i].dynamic:
                if d[:2] == ("import", "pattern"):
                    for cand in self._matching(d[2]):
                        if name in self.info(cand).defs:
                            self.need(cand, name)
                            found = True
        if not found:
            self.keep_whole(info.name)

    def keep(self, mod: str, index: int, alias: str | None = None) -> None:
        info = self.info(mod)
        unit = info.units[index]
        key = (mod, index)
        if unit.kind == "import":
            names = self.aliases.get(key, set())
            if names is None or alias in names:
                return
            new = [b for b, _ in self._targets(info, unit) if alias is None or b == alias]
            self.aliases[key] = None if alias is None else names | {alias}
            for b, t in self._targets(info, unit):
                if b in new:
                    self._reach(t)
            return
        if index in self.kept.setdefault(mod, set()):
            return
        self.kept[mod].add(index)
        self.todo.append(key)

    @staticmethod
    def _targets(info, unit):
        return import_targets(unit.node, info.package)

    def _imported(self, info, unit) -> list[str]:
        """The golf modules an import statement executes (`from p import sub` included)."""
        out = []
        for _, t in self._targets(info, unit):
            out.append(t[1] if t[0] != "module" else t[-1])
            if t[0] == "from" and self.file(f"{t[1]}.{t[2]}"):
                out.append(f"{t[1]}.{t[2]}")
        return [m for m in out if self.file(m)]

    def _reach(self, target: tuple) -> None:
        """What an executed import statement needs."""
        if target[0] == "from":
            self.need(target[1], target[2])
        elif target[0] == "star":
            self.keep_whole(target[1])
        else:
            self.load(target[-1])

    def run(self) -> None:
        while True:
            while self.todo:
                self._process(*self.todo.pop())
            if not self.any_import or not self._follow_strings():
                return

    def _process(self, mod: str, index: int) -> None:
        info = self.info(mod)
        unit = info.units[index]
        for n in unit.names:
            if n in info.defs and n not in unit.local_aliases:
                self.need(mod, n)
        for t in unit.imports:
            self._reach(t)
        for base, attrs in unit.chains:
            target = self.alias_module(info, unit, base)
            if target is not None:
                self._attribute(target, attrs)
        for n in unit.bare:
            target = self.alias_module(info, unit, n)
            if target is not None:
                self.keep_whole(target)
        for d in unit.dynamic:
            if d[0] == "whole":
                self.keep_whole(mod)
            elif d[1] == "const":
                self.keep_whole(d[2])
            elif d[1] == "pattern":
                if not (isinstance(unit.node, ast.FunctionDef)
                        and unit.node.name == "__getattr__"):
                    for cand in self._matching(d[2]):
                        self.keep_whole(cand)
            else:
                self.any_import = True

    def _attribute(self, mod: str, attrs: tuple[str, ...]) -> None:
        """`mod.a.b...`: walk submodules, then need the first plain attribute."""
        for a in attrs:
            info = self.info(mod)
            if a not in info.defs and self.file(f"{mod}.{a}"):
                mod = f"{mod}.{a}"
                self.load(mod)
                continue
            self.need(mod, a)
            return
        self.keep_whole(mod)  # the chain ends at a module used as a value

    def alias_module(self, info: ModuleInfo, unit, name: str) -> str | None:
        """The golf module `name` is bound to in this unit, or None."""
        target = unit.local_aliases.get(name) if unit is not None else None
        target = target or info.aliases.get(name)
        if target is None:
            return None
        if target[0] == "module":
            return target[1] if self.file(target[1]) else None
        if target[0] == "from":
            src = self.info(target[1])
            if src is None:
                return None
            if target[2] in src.aliases:
                return self.alias_module(src, None, target[2])
            if target[2] not in src.defs and self.file(f"{target[1]}.{target[2]}"):
                return f"{target[1]}.{target[2]}"
        return None

    def _matching(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [m for m in self.all_modules() if rx.fullmatch(m)]

    def _follow_strings(self) -> bool:
        """Golf-looking strings in kept code, once a computed import is reachable."""
        before = len(self.todo)
        for mod, idxs in list(self.kept.items()):
            for i in list(idxs):
                for s in self.info(mod).units[i].strings - self._strings_done:
                    self._strings_done.add(s)
                    mod_name, sep, attr = s.partition(":")
                    if sep and self.file(mod_name):
                        self.need(mod_name, attr)
                    elif self.file(s):
                        self.keep_whole(s)
                    elif self.file(s.rpartition(".")[0]):
                        self.need(*s.rsplit(".", 1))
        return len(self.todo) > before

    def has_effects(self, name: str, seen=None) -> bool:
        """Whether importing module `name` runs anything beyond defining names."""
        if name in self._effects:
            return self._effects[name]
        top = seen is None
        seen = set() if top else seen
        info = self.info(name)
        if info is None or name in seen:
            return False
        seen.add(name)
        out = any(u.kind == "effect" for u in info.units) or any(
            self.has_effects(m, seen)
            for u in info.units if u.kind == "import" for m in self._imported(info, u))
        if "." in name:
            out = out or self.has_effects(name.rpartition(".")[0], seen)
        if out or top:  # a False found while an import cycle was cut short is not final
            self._effects[name] = out
        return out

    # -- emitting --------------------------------------------------------------------
    def modules(self) -> list[str]:
        """Golf modules the bundle carries: the loaded ones and their data modules."""
        out = set(self.loaded) - {"__main__"}
        for mod in list(out):
            if self.kept.get(mod) or mod in self.whole:
                out.update(d for d in self.data.get(mod, ()) if self.file(d))
        return sorted(out)

    def source(self, mod: str) -> str:
        """The module's kept statements, in order (whole modules and data verbatim)."""
        info = self.info(mod)
        if mod in self.whole or any(mod in d for d in self.data.values()):
            return info.text
        out = []
        for u in info.units:
            key = (mod, u.index)
            if u.kind != "import":
                if u.index in self.kept.get(mod, ()):
                    out.append(info.segment(u))
                continue
            names = self.aliases.get(key, set())
            if names is None or (names and names >= {b for b, _ in self._targets(info, u)}):
                out.append(info.segment(u))
            elif names:
                node = ast.parse(info.segment(u)).body[0]
                node.names = [a for a in node.names
                              if (a.asname or a.name.split(".")[0]) in names]
                out.append(ast.unparse(node) + "\n")
            if not names:
                out.extend(f"import {m}\n" for m in sorted(self.bare.get(key, ())))
        return "".join(out)


def function_closure(script_text: str, filename: str, *, root: Path, packages,
                     data=None) -> dict[str, tuple[bool, str]]:
    """{module: (is_package, pruned source)} of the golf code `script_text` runs."""
    c = Closure(root, packages, data)
    c.add_script(script_text, filename)
    return {m: (c.info(m).is_pkg, c.source(m)) for m in c.modules()}
