"""Two gloo ranks under torchrun (`-m golfeval.score`) give the single-process result."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tinymodels import saved_gpt

from golfeval.score.evaluate import evaluate


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return saved_gpt(tmp_path_factory.mktemp("dist") / "tiny.safetensors", 1, model_dim=64)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one(ckpt, tiny_shards, tiny_tokenizer, tmp_path, torchrun_score,
                                  one_thread):
    n, out = 2500, tmp_path / "two.npz"
    args = ["--checkpoint", str(ckpt), "--data", str(tiny_shards), "--tokenizer",
            str(tiny_tokenizer), "--seq-len", "64", "--stride", "16", "--max-tokens", str(n),
            "--batch", "3", "--device", "cpu", "--threads", "1", "--per-token", str(out),
            "--json"]
    two = torchrun_score(args, timeout=120)
    assert two["ranks"] == 2 and two["scored_tokens"] == n - 1

    one = evaluate(checkpoint=ckpt, data=tiny_shards, tokenizer=tiny_tokenizer, seq_len=64,
                   stride=16, max_tokens=n, batch=7, device="cpu",
                   per_token_path=tmp_path / "one.npz")
    assert one["ranks"] == 1
    assert math.isclose(two["nats_sum"], one["nats_sum"], rel_tol=1e-9, abs_tol=0)
    assert (two["bytes"], two["windows"]) == (one["bytes"], one["windows"])
    assert math.isclose(two["val_bpb"], one["val_bpb"], rel_tol=1e-9, abs_tol=0)
    with np.load(out) as a, np.load(tmp_path / "one.npz") as b:
        np.testing.assert_allclose(a["nats"], b["nats"], rtol=1e-9, atol=0)
        np.testing.assert_array_equal(a["bytes"], b["bytes"])
