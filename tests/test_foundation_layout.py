"""The distribution's shape: console scripts, versions, and the layering rule
(golfpack imports neither golfeval nor trainer; golfeval never imports trainer)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"golfpack": {"golfeval", "trainer"}, "golfeval": {"trainer"}, "trainer": set()}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                found.add(str(node.args[0].value).split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_packages(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "layering broken:\n" + "\n".join(offenders)


def test_layering_checker_sees_imports(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("import os\nfrom trainer.model import GPT\nimport golfeval.score.core as s\n")
    assert {"trainer", "golfeval"} <= _imported_packages(bad)


@pytest.mark.parametrize("script", ["golfpack", "golfeval", "golftrain"])
def test_console_scripts_help_and_version(script):
    exe = Path(sys.executable).parent / script
    assert exe.exists(), f"{script} console script not installed"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Usage" in out.stdout
    ver = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert ver.returncode == 0 and "0.1.0" in ver.stdout


def test_cli_import_is_torch_free():
    """`golfeval logs` must start fast: importing the CLI groups must not pull in torch."""
    code = ("import sys, golfeval.cli, golfpack.cli, golfpack.cli.kit; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def _modules() -> dict[str, Path]:
    mods = {}
    for package in FORBIDDEN:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _imported_modules(path: Path, known: dict[str, Path], top_level_only: bool) -> set[str]:
    """Project modules `path` imports (`from a.b import c` counts a.b.c when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in known)
    return found


def _is_cli(module: str) -> bool:
    parts = module.split(".")
    return "cli" in parts or parts[-1] == "__main__"


def test_only_cli_modules_import_click():
    offenders = [m for m, p in _modules().items()
                 if not _is_cli(m) and "click" in _imported_packages(p)]
    assert not offenders, f"library modules import click: {offenders}"


def test_library_never_imports_its_cli():
    mods = _modules()
    offenders = [f"{m} imports {sorted(c for c in _imported_modules(p, mods, False) if _is_cli(c))}"
                 for m, p in mods.items()
                 if not _is_cli(m) and any(_is_cli(c) for c in _imported_modules(p, mods, False))]
    assert not offenders, "library modules import CLI modules:\n" + "\n".join(offenders)


def test_no_import_cycles():
    """Module-level imports form no cycle (a cycle makes import order matter)."""
    mods = _modules()
    graph = {m: _imported_modules(p, mods, True) - {m} for m, p in mods.items()}
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycle, "import cycles:\n" + "\n".join(cycle)


_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
LIBRARY = ("golfpack", "golfeval", "trainer")


def _library_modules():
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "cli" not in rel.parts and path.name != "__main__.py":
                yield path


def _message_texts(node) -> list[str]:
    """The string pieces of everything inside `node` (f-string parts included)."""
    return [n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _flags_in_messages(path: Path) -> list[str]:
    """`--flag` text in what a library module raises or tells the user: the arguments of
    `raise X(...)`, of a `Note(...)` and of a `warn(...)` / `need(...)` call."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            parts = _message_texts(node.exc)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                node.func, "attr", "")) in ("Note", "warn", "need", "_flag"):
            parts = _message_texts(node)
        else:
            continue
        found += [f"{where}:{node.lineno}: {text!r}"
                  for text in parts if _FLAG.search(text)]
    return found


def test_library_messages_name_no_cli_flags():
    """Library errors name the parameter (`force`, `max_tokens`); only a CLI knows its flags
    and writes them in (golfpack.cli.kit)."""
    offenders = [hit for path in _library_modules() for hit in _flags_in_messages(path)]
    assert not offenders, "library messages naming CLI flags:\n" + "\n".join(offenders)


def test_flag_checker_sees_raised_and_warned_flags(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text('def f(x, warn):\n    """--docstrings are fine"""\n'
                   '    warn(f"pass a smaller --ttt-chunk than {x}")\n'
                   '    raise E(f"{x} exists; pass --force", param="force")\n')
    hits = " | ".join(sorted(_flags_in_messages(bad)))
    assert hits.count("m.py") == 2 and "--ttt-chunk" in hits and "--force" in hits
