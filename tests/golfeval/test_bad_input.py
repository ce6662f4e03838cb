"""Bad input never turns into a silent wrong number: non-finite losses are an error naming
the first offending position (and --json stays strict JSON), several corpora are built
together or a repeat is refused, and zero or NaN option values are usage errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tinymodels import live_gpt

from golfeval.cli import main as golfeval_main
from golfeval.data import shards
from golfeval.data.build import build
from golfeval.score.core import score_tokens
from golfpack.checkpoint import save
from golfpack.errors import GolfError, NonFiniteError

pytestmark = pytest.mark.usefixtures("one_thread")


class PoisonAt(torch.nn.Module):
    """Uniform logits, NaN wherever the input token is `poison`."""

    def __init__(self, vocab=16, poison=7):
        super().__init__()
        self.vocab, self.poison = vocab, poison

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, self.vocab)
        logits[idx == self.poison] = math.nan
        return logits


@pytest.mark.parametrize("mode", ["flat", "sliding"])
def test_non_finite_loss_names_the_first_target(mode):
    tokens = np.array([1, 2, 3, 4, 5, 6, 2, 3, 4, 7, 2, 7, 3, 4, 5, 6, 1, 2], dtype=np.int64)
    nbytes = np.ones(tokens.size - 1, dtype=np.int64)
    ok = score_tokens(PoisonAt(poison=15), tokens, nbytes, mode=mode, seq_len=4, stride=2,
                      batch=3)
    assert math.isfinite(ok.val_bpb)
    with pytest.raises(NonFiniteError, match=r"target position 9 \(token id 2\)"):
        score_tokens(PoisonAt(), tokens, nbytes, mode=mode, seq_len=4, stride=2, batch=3)


@pytest.fixture(scope="module")
def nan_ckpt(tmp_path_factory):
    m, cfg = live_gpt(0, vocab_size=512, model_dim=32)
    sd = m.state_dict()
    sd["blocks.0.mlp.fc.weight"] = torch.full_like(sd["blocks.0.mlp.fc.weight"], math.nan)
    path = tmp_path_factory.mktemp("nan") / "nan.safetensors"
    save(path, sd, cfg.to_dict())
    return path


@pytest.mark.parametrize("as_json", [True, False])
def test_nan_checkpoint_is_an_error_not_a_score(nan_ckpt, tiny_shards, tiny_tokenizer,
                                                as_json):
    args = ["score", "--checkpoint", str(nan_ckpt), "--data", str(tiny_shards), "--tokenizer",
            str(tiny_tokenizer), "--seq-len", "32", "--stride", "16", "--max-tokens", "200",
            "--device", "cpu"] + (["--json"] if as_json else [])
    r = CliRunner().invoke(golfeval_main, args)
    assert r.exit_code == 1, r.output
    assert r.stdout == ""  # no NaN score, no half-written (or non-strict) JSON
    err = r.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "not finite" in err and "target position 0" in err


def _corpus(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_build_takes_several_corpora_in_order(tmp_path, tiny_tokenizer):
    a = _corpus(tmp_path / "a.jsonl", ["alpha one", "alpha two", "alpha three"])
    b = _corpus(tmp_path / "b.jsonl", ["beta one", "beta two"])
    v = _corpus(tmp_path / "v.jsonl", ["held out"])
    s = build(tiny_tokenizer, [a, b], tmp_path / "o1", val_docs=2)
    assert (s.val_docs, s.train_docs) == (2, 3)
    assert [c["docs"] for c in s.corpora] == [3, 2]
    s = build(tiny_tokenizer, [a, b], tmp_path / "o2", val=[v])
    assert (s.val_docs, s.train_docs) == (1, 5)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_tokenizer))
    assert shards.load_tokens(tmp_path / "o2", kind="val").tolist() == [1] + sp.encode("held out")
    with pytest.raises(GolfError, match="given twice"):
        build(tiny_tokenizer, [a, b, tmp_path / "." / "a.jsonl"], tmp_path / "o3", val_docs=1)


def test_build_cli_repeat_docs_keeps_both(tmp_path, tiny_tokenizer):
    a = _corpus(tmp_path / "a.jsonl", ["alpha one", "alpha two"])
    b = _corpus(tmp_path / "b.jsonl", ["beta one", "beta two", "beta three"])
    base = ["data", "build", "--tokenizer", str(tiny_tokenizer), "--json"]
    r = CliRunner().invoke(golfeval_main, [*base, "--docs", str(a), "--docs", str(b),
                                           "--out", str(tmp_path / "o"), "--val-docs", "1"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["val_docs"], s["train_docs"]) == (1, 4)
    r = CliRunner().invoke(golfeval_main, [*base, "--docs", str(a), "--docs", str(a),
                                           "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "given twice" in r.stderr
    r = CliRunner().invoke(golfeval_main, [*base, "--docs", str(a), "--workers", "0",
                                           "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "--workers" in r.stderr


@pytest.mark.parametrize("args", [
    ["score", "--batch", "0"], ["score", "--threads", "0"], ["score", "--stride", "0"],
    ["score", "--ttt-lr", "nan"], ["audit", "--batch", "0"], ["audit", "--threads", "0"],
    ["audit", "--positions", "0"],
    ["verify", ".", "--claim", "nan"], ["verify", ".", "--claim", "inf"],
    ["significance", "x", "--sota-bpb", "nan"], ["significance", "x", "--alpha", "0"],
    ["seeds-needed", "--delta", "0.01", "--std", "nan"],
])
def test_zero_and_nan_options_are_usage_errors(args):
    r = CliRunner().invoke(golfeval_main, args)
    assert r.exit_code == 2, r.output
    assert "Invalid value" in r.stderr


def test_progress_bars_are_quiet_off_a_terminal(tmp_path, tiny_tokenizer, pydoc_corpus,
                                                tiny_shards):
    """Captured logs hold no carriage-return bars: tqdm is off when stderr is no terminal."""
    r = CliRunner().invoke(golfeval_main, ["data", "build", "--tokenizer", str(tiny_tokenizer),
                                           "--docs", str(pydoc_corpus), "--out",
                                           str(tmp_path / "o"), "--val-docs", "5"])
    assert r.exit_code == 0, r.output
    assert "\r" not in r.stderr and "validation:" in r.stdout
    m, cfg = live_gpt(0, vocab_size=512, model_dim=32)
    save(tmp_path / "m.safetensors", m.state_dict(), cfg.to_dict())
    ckpt = str(tmp_path / "m.safetensors")
    r = CliRunner().invoke(golfeval_main, ["score", "--checkpoint", ckpt,
                                           "--data", str(tiny_shards), "--tokenizer",
                                           str(tiny_tokenizer), "--seq-len", "32", "--stride", "16",
                                           "--max-tokens", "300", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "\r" not in r.stderr and "val_bpb:" in r.stdout


def test_ranks_agree_on_the_first_non_finite_target(monkeypatch):
    """With a process group every rank stops at its first bad target, still meets the others
    at the one all-reduce, and all name the same, global first position (here on rank 1,
    while rank 0's slice is clean). Ranks are simulated: each one's all-reduce input is
    captured, then every rank reruns with the sum."""
    from golfeval.score import core, distributed
    from golfeval.score.core import make_plan, score_windows

    tokens = np.array([1, 2, 3, 4, 5, 6, 2, 3, 4, 5, 2, 7, 3, 4, 7, 6, 1, 2], dtype=np.int64)
    nbytes = np.ones(tokens.size - 1, dtype=np.int64)
    plan = make_plan(tokens.size, "sliding", 4, 2)
    monkeypatch.setattr(core.distributed, "active_world", lambda: 2)
    sent = {}

    class Captured(Exception):
        pass

    def capture(rank):
        def fake(values):
            sent[rank] = np.asarray(values, dtype=np.float64)
            raise Captured
        return fake

    for rank in (0, 1):
        monkeypatch.setattr(distributed, "all_reduce_sum", capture(rank))
        with pytest.raises(Captured):
            score_windows(PoisonAt(), tokens, plan, nbytes, batch=2, rank=rank, world=2)
    total = sent[0] + sent[1]
    assert sent[0][4] == 0 and sent[1][5] > 0  # rank 0's slice is clean
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda values: total.copy())
    for rank in (0, 1):
        with pytest.raises(NonFiniteError, match=r"target position 11 \(token id 3\)"):
            score_windows(PoisonAt(), tokens, plan, nbytes, batch=2, rank=rank, world=2)


def test_a_log_that_says_nan_is_null_in_strict_json(tmp_path):
    """A diverged run's log is data, not our result: `logs --json` stays strict JSON (null)
    instead of printing NaN or refusing the folder."""
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "train_seed1.log").write_text(
        "seed:1\nstep:10/10 train_loss:nan train_time:1000ms step_avg:100.00ms\n"
        "final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan\n")
    r = CliRunner().invoke(golfeval_main, ["logs", str(rec), "--json"])
    assert r.exit_code == 0, r.output
    assert "NaN" not in r.stdout
    json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
