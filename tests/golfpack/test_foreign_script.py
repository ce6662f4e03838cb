"""Competitor scripts as model libraries (`--model PATH/train_gpt.py:GPT`): imported without
running their training, refused when their top level does work, built from their own
Hyperparameters with config values over them; CPU stand-ins stay private to the script."""

from __future__ import annotations

import sys
import textwrap

import pytest

from golfpack.errors import CheckpointError
from golfpack.foreign.script import build_from_script, import_script, is_script_spec

SCRIPT = """
import os
import torch
from torch import nn
from flash_attn_interface import flash_attn_func
import triton
import triton.language as tl


class Hyperparameters:
    num_layers = int(os.environ.get("NUM_LAYERS", 3))
    model_dim = int(os.environ.get("MODEL_DIM", 8))
    iterations = 20000


@triton.jit
def kernel(x, BLOCK: tl.constexpr):
    pass


class GPT(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(h.model_dim, h.model_dim)
                                    for _ in range(h.num_layers))


class Kw(nn.Module):
    def __init__(self, num_layers, model_dim, extra=1):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(num_layers, model_dim))


def main():
    open(os.environ["MARKER"], "w").write("trained")


if __name__ == "__main__":
    main()
"""


def _write(tmp_path, body, name="train_gpt.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def test_builds_from_its_hyperparameters_without_training(tmp_path, monkeypatch):
    marker = tmp_path / "trained"
    monkeypatch.setenv("MARKER", str(marker))
    p = _write(tmp_path, SCRIPT)
    model, hp, ignored = build_from_script(f"{p}:GPT", {"NUM_LAYERS": 2, "not_there": 1})
    assert len(model.layers) == 2 and hp["model_dim"] == 8 and hp["iterations"] == 20000
    assert ignored == ["not_there"]
    model, _, _ = build_from_script(f"{p}:Kw", {"model_dim": 5})
    assert tuple(model.w.shape) == (3, 5)
    assert not marker.exists()
    # the stand-ins served the script's imports only
    assert "flash_attn_interface" not in sys.modules or \
        not getattr(sys.modules["flash_attn_interface"], "__golf_standin__", False)
    assert "triton" not in sys.modules or \
        not getattr(sys.modules["triton"], "__golf_standin__", False)
    assert is_script_spec(f"{p}:GPT") and not is_script_spec("trainer.model:GPT")


@pytest.mark.parametrize("body,what", [
    ("import os\nmain = print\nmain('x')\n", "top-level expr"),
    ("def train():\n    return 1\nresult = train()\n", "calls train()"),
    ("for i in range(3):\n    pass\n", "top-level for"),
    ("with open(__file__) as f:\n    pass\n", "top-level with"),
    ("def f(:\n", "not valid Python"),
])
def test_scripts_that_work_at_import_are_refused(tmp_path, body, what):
    p = _write(tmp_path, body, "bad.py")
    with pytest.raises(CheckpointError, match=what):
        import_script(p)


def test_failures_are_one_line(tmp_path):
    p = _write(tmp_path, "import no_such_package_anywhere\n", "imp.py")
    with pytest.raises(CheckpointError, match="importing the script failed: "
                                              "ModuleNotFoundError"):
        import_script(p)
    p = _write(tmp_path, SCRIPT)
    with pytest.raises(CheckpointError, match="no class or function 'Nope'"):
        build_from_script(f"{p}:Nope")
    with pytest.raises(CheckpointError, match="no such script"):
        import_script(tmp_path / "absent.py")
