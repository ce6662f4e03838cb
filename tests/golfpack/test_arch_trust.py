"""Issue 20 §1: a file never chooses code to run. The `arch` string a checkpoint's metadata
or a .golf header carries is imported only when it is on the allow-list; a crafted
"subprocess:getoutput" (or a script path) is refused with one line naming it, exit 2, and
`golfpack inspect` flags it. Regression tests, one per way in."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from tinymodels import live_gpt

from golfeval.cli import main as golfeval_main
from golfpack.cli import main as golfpack_main


@pytest.fixture()
def evil(tmp_path):
    """Weights of a real tiny GPT whose config names hostile code, in both file kinds."""
    from golfpack.checkpoint import save
    from golfpack.compress import compress_state_dict

    marker = tmp_path / "pwned"
    script = tmp_path / "evil.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('ran')\nGPT = dict\n")
    m, cfg = live_gpt(0)
    out = {}
    for name, arch in (("shell", "subprocess:getoutput"), ("script", f"{script}:GPT")):
        bad = {**cfg.to_dict(), "arch": arch, "cmd": f"touch {marker}"}
        ckpt = tmp_path / f"{name}.safetensors"
        save(ckpt, m.state_dict(), bad)
        data, _ = compress_state_dict(m.state_dict(), bad)
        art = tmp_path / f"{name}.golf"
        art.write_bytes(data)
        out[name] = (ckpt, art, arch)
    return out, marker


def _score(*args):
    return CliRunner().invoke(golfeval_main, ["score", *map(str, args)])


@pytest.mark.parametrize("kind", ["shell", "script"])
def test_score_refuses_file_named_arch(evil, kind, tiny_shards, tiny_tokenizer):
    files, marker = evil
    ckpt, art, arch = files[kind]
    for flag, path in (("--checkpoint", ckpt), ("--artifact", art)):
        r = _score(flag, path, "--data", tiny_shards, "--tokenizer", tiny_tokenizer,
                   "--max-tokens", 300, "--seq-len", 64)
        assert r.exit_code == 2, r.output
        line = r.output.strip()
        assert "\n" not in line and arch[:40] in line and "allow-list" in line
        assert not marker.exists()


def test_user_named_model_scores_the_same_file(evil, tiny_shards, tiny_tokenizer):
    files, marker = evil
    ckpt, art, _ = files["shell"]
    r = _score("--artifact", art, "--model", "trainer.model:GPT", "--data", tiny_shards,
               "--tokenizer", tiny_tokenizer, "--max-tokens", 300, "--seq-len", 64, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["model"]["arch"] == "trainer.model:GPT"
    assert not marker.exists()


def test_audit_refuses_file_named_arch(evil, tiny_shards, tiny_tokenizer):
    files, marker = evil
    r = CliRunner().invoke(golfeval_main, [
        "audit", "--checkpoint", str(files["shell"][0]), "--data", str(tiny_shards),
        "--tokenizer", str(tiny_tokenizer), "--mode", "flat"])
    assert r.exit_code == 2, r.output
    assert "subprocess:getoutput" in r.output and not marker.exists()


def test_inspect_flags_foreign_arch(evil):
    files, marker = evil
    art = files["shell"][1]
    r = CliRunner().invoke(golfpack_main, ["inspect", str(art), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["arch"] == "subprocess:getoutput" and rep["arch_on_allow_list"] is False
    r = CliRunner().invoke(golfpack_main, ["inspect", str(art)])
    assert "not one of golf's own" in r.output
    assert not marker.exists()


def test_compress_does_not_build_foreign_arch(evil, tmp_path):
    files, marker = evil
    r = CliRunner().invoke(golfpack_main, ["compress", str(files["script"][0]), "-o",
                                           str(tmp_path / "x.golf"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["weights_checked"] is False and not marker.exists()


def test_library_allow_list_and_registration(evil):
    from golfpack import checkpoint

    files, marker = evil
    state, cfg = checkpoint.load(files["shell"][0])
    with pytest.raises(checkpoint.UntrustedArchError, match="subprocess:getoutput"):
        checkpoint.build_model(cfg, state)
    # the caller naming the model is the user's choice; so is an explicit registration
    model = checkpoint.build_model({k: v for k, v in cfg.items() if k != "cmd"}, state,
                                   arch="trainer.model:GPT")
    assert isinstance(model, torch.nn.Module)
    checkpoint.register_arch("tinymodels:live_gpt")
    try:
        assert checkpoint.arch_trusted("tinymodels:live_gpt")
    finally:
        checkpoint.TRUSTED_ARCHS.discard("tinymodels:live_gpt")
    assert not marker.exists()
