"""The distribution's shape: console scripts, versions, and the layering rule
(golfpack imports neither golfeval nor trainer; golfeval never imports trainer)."""

from __future__ import annotations

import ast
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
    bad.write_text("import os\nfrom trainer.model import GPT\nimport golfeval.score as s\n")
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
    code = ("import sys, golfeval.cli, golfpack.cli, golfpack.clikit; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
