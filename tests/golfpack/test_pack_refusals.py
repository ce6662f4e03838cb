"""`golfpack compress` never falls back silently: a blank --scheme is refused (on the CLI
and in the library), and when the built-in @small=fp16 keeps matrices in float (every
matrix of a tiny model under the default spec) the output names the rule."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from tinymodels import live_gpt

from golfpack import checkpoint
from golfpack.cli import main
from golfpack.compress import compress_state_dict
from golfpack.quant.scheme import SchemeError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m, cfg = live_gpt(0)
    path = tmp_path_factory.mktemp("ck") / "tiny.safetensors"
    checkpoint.save(path, m.state_dict(), cfg.to_dict())
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("spec", ["", ";;;", " ; "])
def test_blank_scheme_is_refused(ckpt, tmp_path, spec):
    out = tmp_path / "a.golf"
    for cmd in (["compress", ckpt, "-o", out], ["bench", ckpt]):
        r = run(*cmd, "--scheme", spec)
        assert r.exit_code == 2 and "--scheme" in r.stderr
    assert not out.exists()
    sd = checkpoint.load(ckpt)[0]
    with pytest.raises(SchemeError, match="holds no rule"):
        compress_state_dict(sd, {}, scheme_spec=spec)


def test_default_scheme_note_names_the_rule(ckpt, tmp_path):
    r = run("compress", ckpt, "-o", tmp_path / "a.golf", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["kept_by_passthrough"] == []  # no rule of the user's is shadowed ...
    assert rep["kept_in_float"]["blocks.0.mlp.fc.weight"] == "@small=fp16"  # ... but this is
    assert "@small=fp16" in r.stderr and "stay in float" in r.stderr
    assert "\r" not in r.stderr  # no progress bar off a terminal
    r = run("compress", ckpt, "-o", tmp_path / "b.golf", "--json", "--scheme",
            "@control=fp32;*=int6")
    assert json.loads(r.stdout)["kept_in_float"] == {} and "note:" not in r.stderr
