"""The eval budget: `score` reports the wall time of the whole evaluation and its parts,
and `--eval-budget` exits 1 (report still printed) when the run took longer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from tinymodels import frozen_gpt

from golfeval.cli import main
from golfeval.score.evaluate import evaluate, warm_up
from golfeval.ttt.fingerprint import fingerprint, state_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


def _score(checkpoint, tiny_shards, tiny_tokenizer, *args):
    base = ["score", "--checkpoint", str(checkpoint), "--data", str(tiny_shards),
            "--tokenizer", str(tiny_tokenizer), "--max-tokens", "400", "--seq-len", "64",
            "--stride", "32", "--device", "cpu"]
    return CliRunner().invoke(main, base + list(args))


def test_report_times_the_whole_evaluation(tiny_checkpoint, tiny_shards, tiny_tokenizer):
    rep = evaluate(checkpoint=tiny_checkpoint, data=tiny_shards, tokenizer=tiny_tokenizer,
                   seq_len=64, stride=32, max_tokens=400, device="cpu", eval_budget=600)
    t = rep["timing"]
    assert set(t) == {"startup_s", "load_s", "data_s", "warmup_s", "score_s", "ttt_s",
                      "total_s"}
    assert t["startup_s"] > 0          # this process started before the call
    assert t["total_s"] == rep["eval_seconds"] >= sum(v for k, v in t.items() if k != "total_s")
    assert t["score_s"] >= rep["seconds"] > 0 and t["ttt_s"] < t["score_s"]
    assert rep["eval_budget"] == 600 and rep["within_budget"] is True


def test_budget_exceeded_exits_1_after_the_report(tiny_checkpoint, tiny_shards, tiny_tokenizer):
    r = _score(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--eval-budget", "1e-6", "--json")
    assert r.exit_code == 1
    rep = json.loads(r.output[: r.output.rindex("}") + 1])
    assert rep["within_budget"] is False and rep["eval_budget"] == 1e-6
    assert "over the 1e-06 s budget" in r.output.strip().splitlines()[-1]
    ok = _score(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--eval-budget", "600")
    assert ok.exit_code == 0, ok.output
    assert "of a 600 s budget (within)" in ok.output
    bad = _score(tiny_checkpoint, tiny_shards, tiny_tokenizer, "--eval-budget", "0")
    assert bad.exit_code == 2


def test_warm_up_runs_on_random_tokens_and_leaves_the_model(tmp_path):
    model = frozen_gpt()
    before = fingerprint(state_tensors(model))
    s = warm_up(model, 512, 200, mode="sliding", seq_len=64, stride=32, batch=2,
                doc_isolation=False, device="cpu")
    assert s > 0 and fingerprint(state_tensors(model)) == before
    assert warm_up(model, 512, 1, mode="flat", seq_len=64, stride=32, batch=2,
                   doc_isolation=False, device="cpu") == 0.0
    assert np.isfinite(s)
