"""`golfeval audit` end to end: PASS on a checkpoint, FAIL (exit 1, first violating
position) when the mode leaks, one-line errors (exit 2) for bad options."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from golfeval.audit import causality as audit
from golfeval.cli import main
from golfeval.ttt.lora import evaluate_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(checkpoint, tiny_shards, tiny_tokenizer, *args):
    base = ["audit", "--checkpoint", str(checkpoint), "--data", str(tiny_shards),
            "--tokenizer", str(tiny_tokenizer), "--max-tokens", "700", "--seq-len", "64",
            "--stride", "16", "--positions", "2", "--sweeps", "0"]  # sweeps: test_audit_leaks
    return CliRunner().invoke(main, base + list(args))


def test_sliding_passes_as_json(tiny_checkpoint, tiny_shards, tiny_tokenizer):
    r = _run(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--mode", "sliding", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["result"] == "PASS" and rep["first_violation"] is None
    assert rep["tokens"] == 700 and rep["scored"] == 699 and len(rep["cuts"]) == 2
    assert all(c["ok"] for c in rep["checks"])


def test_lora_passes_with_text_report(tiny_checkpoint, tiny_shards, tiny_tokenizer):
    r = _run(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--mode", "lora", "--ttt-chunk", "64",
             "--ttt-rank", "2")
    assert r.exit_code == 0, r.output
    assert "PASS lora on 700 tokens, 2 cuts" in r.output
    assert "stream coverage" in r.output and "stream bytes" in r.output


def _leaky_loop(batch, ledger, tally, key):
    for c in range(batch.steps):
        if batch.trains(c).any():
            batch.step(c, batch.forward(c))
        tally.add(batch, c, batch.forward(c))


def test_a_leaky_mode_fails_with_exit_1(tiny_checkpoint, tiny_shards, tiny_tokenizer, monkeypatch):
    def leaky(model, cfg):
        return audit.AuditMode("lora", lambda t, tb: evaluate_lora(
            model, t, tb, cfg.ttt, per_token=True, _loop=_leaky_loop),
            boundaries=lambda t: [100])  # cuts 99..101 sit inside a trained chunk

    monkeypatch.setitem(audit.MODES, "lora", leaky)
    r = _run(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--mode", "lora", "--ttt-chunk", "64",
             "--ttt-rank", "2")
    assert r.exit_code == 1, r.output
    assert "FAIL lora" in r.output and "first violating position 65" in r.output
    assert "error: audit of lora failed at position 65" in r.output


@pytest.mark.parametrize("args,msg", [
    (["--mode", "flat", "--ttt-rank", "4"], "need --mode lora, sgd or phased"),
    (["--mode", "lora", "--ttt-epochs", "2"], "epochs do not apply to lora"),
    (["--mode", "sgd", "--ttt-rank", "2"], "do not apply to sgd"),
    (["--mode", "lora", "--ttt-chunk", "32", "--ttt-targets", "q,zz"], "unknown LoRA target"),
])
def test_bad_options_are_one_line_errors(tiny_checkpoint, tiny_shards, tiny_tokenizer, args, msg):
    r = _run(tiny_checkpoint, tiny_shards, tiny_tokenizer, *args)
    last = r.output.strip().splitlines()[-1]
    assert r.exit_code == 2 and last.startswith("error: ") and msg in last


def test_missing_checkpoint(tmp_path, tiny_shards, tiny_tokenizer):
    r = _run(tmp_path / "nope.safetensors", tiny_shards, tiny_tokenizer, "--mode", "flat")
    assert r.exit_code == 2 and "no such checkpoint" in r.output
