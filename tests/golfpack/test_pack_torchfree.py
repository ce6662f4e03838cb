"""Reading an artifact needs numpy and the codec libraries only: golfpack.format, the ans
decode path and the decoder generator import neither torch nor click, and `golfpack inspect`
works in an interpreter where torch cannot be imported."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from golfpack.artifact import encode_artifact
from golfpack.quant.qmodel import quantize_state_dict

ROOT = Path(__file__).resolve().parents[2]
TORCH_FREE = ["golfpack/format", "golfpack/ans/codec.py", "golfpack/ans/rans.py",
              "golfpack/ans/tables.py", "golfpack/ans/fit.py", "golfpack/decoder/__init__.py",
              "golfpack/accounting.py", "golfpack/errors.py", "golfpack/fileio.py",
              "golfpack/bundle.py", "golfpack/inline.py", "golfpack/closure.py",
              "golfpack/symbols.py", "golfpack/shards.py", "golfpack/cli/read.py",
              "golfpack/cli/report.py"]
BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ImportError('torch is blocked in this test')
sys.meta_path.insert(0, _NoTorch())
"""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_reader_modules_never_import_torch_or_click():
    offenders = []
    for rel in TORCH_FREE:
        p = ROOT / rel
        for path in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            if not path.exists():
                continue
            bad = {m for m in _imports(path) if m.split(".")[0] in ("torch", "click")}
            if path.name.startswith(("read", "report")) and "cli" in path.parts:
                bad.discard("click")  # CLI modules parse flags: only torch is banned there
            bad |= {m for m in _imports(path)
                    if m.startswith(("golfpack.quant", "golfpack.hessian", "golfpack.artifact",
                                     "golfpack.checkpoint"))}
            if bad:
                offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_importing_the_read_path_loads_no_torch():
    code = ("import sys, golfpack.compress, golfpack.format.reader, golfpack.decoder, "
            "golfpack.bundle, golfpack.cli.read, golfpack.ans.codec; "
            "print(sorted(m for m in ('torch', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.strip() == "['click']", out.stderr  # click: the CLI module only


def _run_without_torch(tmp_path, args):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_inspect_and_decoder_work_where_torch_cannot_be_imported(tmp_path):
    qm = quantize_state_dict({"a.weight": torch.randn(32, 64), "a.bias": torch.randn(32)},
                             "@control=fp32;*.bias=fp16;*=int6")
    data, report = encode_artifact(qm, {"d": 1}, codec="auto")
    art = tmp_path / "m.golf"
    art.write_bytes(data)
    res = _run_without_torch(tmp_path, ["-c", "import torch"])
    assert res.returncode != 0 and "blocked" in res.stderr
    res = _run_without_torch(tmp_path, ["-m", "golfpack", "inspect", str(art), "--json"])
    assert res.returncode == 0, res.stderr[-1500:]
    got = json.loads(res.stdout)
    assert got["model_bytes"] == len(data) and got["params"] == 32 * 64 + 32
    assert got["decoder_bytes"] > 0
    res = _run_without_torch(tmp_path, ["-m", "golfpack", "decoder", "-o",
                                        str(tmp_path / "d.py"), "--for", str(art)])
    assert res.returncode == 0, res.stderr[-1500:]
    assert (tmp_path / "d.py").stat().st_size > 1000
