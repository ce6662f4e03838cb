"""Phased TTT on two gloo ranks under torchrun gives the single-process result bit for bit:
LoRA batches are split over the ranks, and the global SGD adds fixed gradient leaves in
the same order whatever the rank count."""

from __future__ import annotations

import numpy as np
import pytest
from tinymodels import saved_gpt

from golfeval.data.shards import load_tokens
from golfeval.score.evaluate import evaluate
from golfeval.ttt.lora import split_documents
from golfeval.ttt.settings import make_settings

N = 2500
OPTS = dict(rank=4, chunk=32, phases="1,2", phase_lr="0.05", phase_batch=4)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_bit_for_bit(tiny_shards, tiny_tokenizer, tmp_path,
                                              torchrun_score, one_thread):
    ckpt = saved_gpt(tmp_path / "tiny.safetensors", 1, model_dim=32)
    out = tmp_path / "two.npz"
    args = ["--checkpoint", str(ckpt), "--data", str(tiny_shards), "--tokenizer",
            str(tiny_tokenizer), "--seq-len", "64", "--max-tokens", str(N), "--device", "cpu",
            "--threads", "1", "--per-token", str(out), "--json", "--ttt", "phased",
            "--ttt-rank", "4", "--ttt-chunk", "32", "--ttt-phases", "1,2",
            "--ttt-phase-lr", "0.05", "--ttt-phase-batch", "4", "--ttt-docs-per-batch", "1"]
    two = torchrun_score(args, timeout=300)
    assert two["ranks"] == 2 and two["scored_tokens"] == N - 1
    assert two["eval_seconds"] >= two["ttt_seconds"] > 0      # the slowest rank's

    # one rank (one thread), three documents per forward
    one = evaluate(checkpoint=ckpt, data=tiny_shards, tokenizer=tiny_tokenizer, seq_len=64,
                   max_tokens=N, device="cpu", per_token_path=tmp_path / "one.npz",
                   ttt=make_settings("phased", seq_len=64, docs_per_batch=3, **OPTS))
    assert one["ranks"] == 1
    n_docs = split_documents(load_tokens(tiny_shards, "val", max_tokens=N))[0].size
    assert n_docs >= 3
    assert [p["documents"] for p in one["phases_run"]] == [1, 2]
    assert one["phases_run"] == [{**p, "seconds": q["seconds"]} for p, q in
                                 zip(two["phases_run"], one["phases_run"], strict=True)]
    assert two["nats_sum"] == one["nats_sum"] and two["val_bpb"] == one["val_bpb"]
    assert two["bytes"] == one["bytes"]
    with np.load(out) as a, np.load(tmp_path / "one.npz") as b:
        np.testing.assert_array_equal(a["nats"], b["nats"])
        np.testing.assert_array_equal(a["bytes"], b["bytes"])
