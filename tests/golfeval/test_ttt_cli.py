"""`golfeval score --ttt lora|sgd`: the report carries the TTT settings, the pre-TTT score
(the plain --mode run) and the TTT score; option errors are one line with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from tinymodels import frozen_gpt

from golfeval.cli import main
from golfeval.ttt.lora import LoraSettings
from golfeval.ttt.settings import eager, make_settings, run_ttt
from golfeval.ttt.sgd import SGDSettings
from golfpack.errors import GolfError

pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    return frozen_gpt()


def _score(checkpoint, tiny_shards, tiny_tokenizer, *args):
    base = ["score", "--checkpoint", str(checkpoint), "--data", str(tiny_shards),
            "--tokenizer", str(tiny_tokenizer), "--max-tokens", "600", "--seq-len", "64",
            "--stride", "16", "--device", "cpu"]
    return CliRunner().invoke(main, base + list(args))


@pytest.mark.parametrize("kind,extra", [
    ("lora", ["--ttt-chunk", "32", "--ttt-rank", "2", "--ttt-lr", "0.02"]),
    ("sgd", ["--ttt-chunk", "200", "--ttt-epochs", "1", "--ttt-lr", "0.01"]),
    ("phased", ["--ttt-chunk", "32", "--ttt-rank", "2", "--ttt-phases", "0.5",
                "--ttt-phase-batch", "4", "--ttt-lr", "0.02"]),
])
def test_score_with_ttt_reports_both_scores(tiny_checkpoint, tiny_shards, tiny_tokenizer, kind,
                                            extra):
    plain = _score(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--json")
    assert plain.exit_code == 0, plain.output
    plain = json.loads(plain.output)
    r = _score(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--ttt", kind, "--json", *extra)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["pre_ttt_bpb"] == plain["val_bpb"] and rep["mode"] == "sliding"
    lr = rep["ttt"]["lora"]["lr"] if kind == "phased" else rep["ttt"]["lr"]
    assert rep["ttt"]["kind"] == kind and lr == float(extra[-1])
    assert rep["scored_tokens"] == 599 and rep["bytes"] == plain["bytes"]
    assert rep["ttt_gain_bpb"] == pytest.approx(rep["val_bpb"] - rep["pre_ttt_bpb"])
    assert rep["ttt_seconds"] > 0 and "scoring and adapting" in rep["ttt_timer"]
    assert rep["label"] in ("final_ttt_lora_exact", "legal_ttt_exact",
                            "quantized_ttt_phased_exact")
    assert rep["eval_seconds"] >= rep["ttt_seconds"] + rep["pre_ttt_seconds"]
    assert rep["line"].startswith(rep["label"] + " val_loss:")


def test_text_output_names_the_gain(tiny_checkpoint, tiny_shards, tiny_tokenizer):
    r = _score(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--ttt", "lora", "--ttt-chunk", "32")
    assert r.exit_code == 0, r.output
    assert "ttt     lora: pre-TTT val_bpb" in r.output
    assert r.output.strip().splitlines()[-1].startswith("final_ttt_lora_exact val_loss:")


@pytest.mark.parametrize("args,msg", [
    (["--ttt-rank", "4"], "need --ttt lora, sgd or phased"),
    (["--ttt", "sgd", "--ttt-rank", "4"], "do not apply to sgd"),
    (["--ttt", "lora", "--ttt-chunk", "128"], "shorter than its chunk"),
    (["--ttt", "lora", "--ttt-warm-a", "--ttt-doc-order", "length"], "stream order"),
    (["--ttt", "phased", "--ttt-chunk", "32", "--ttt-phases", "2,1"], "must increase"),
    (["--ttt", "phased", "--ttt-chunk", "32", "--ttt-phases", "1,2", "--ttt-phase-lr",
      "0.1,0.2,0.3"], "phases"),
    (["--ttt", "lora", "--ttt-phases", "3"], "do not apply to lora"),
])
def test_option_errors(tiny_checkpoint, tiny_shards, tiny_tokenizer, args, msg):
    r = _score(tiny_checkpoint, tiny_shards, tiny_tokenizer, *args)
    assert r.exit_code == 2 and msg in r.output.strip().splitlines()[-1]


def test_settings_and_eager():
    s = make_settings("lora", rank=2, chunk=64, seq_len=256, targets="q,head")
    assert s == LoraSettings(rank=2, chunk=64, context=256, targets=("q", "head"))
    s = make_settings("sgd", chunk=4096, epochs=1, seq_len=512, stride=32, batch=8)
    assert s == SGDSettings(chunk_tokens=4096, epochs=1, seq_len=512, stride=32,
                            score_batch=8)
    with pytest.raises(GolfError):
        make_settings("nope")
    m = _model()
    calls = []
    m.hidden = lambda *a, **k: calls.append(1)  # stands in for a torch.compile'd hidden
    tokens = np.array([1, 5, 6, 7, 1, 8, 9], dtype=np.int64)
    r = run_ttt(m, tokens, np.ones(6, dtype=np.int64), LoraSettings(chunk=2, context=4))
    assert r.scored_tokens == 6 and calls == []  # ran the class's eager hidden
    with eager(m):
        assert "hidden" not in m.__dict__
    assert "hidden" in m.__dict__
