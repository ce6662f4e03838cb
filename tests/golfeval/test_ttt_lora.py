"""Per-document LoRA TTT on a tiny model: document split, coverage exactly once, the
targets equal the flat stream's, per-document reset, batch composition, adaptation helps,
the model is left untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golfeval.data.shards import load_tokens
from golfeval.ttt.lora import (
    BatchedLoRA,
    LoraSettings,
    chunk_window,
    evaluate_lora,
    split_documents,
)
from golfpack.errors import GolfError

S = LoraSettings(rank=4, chunk=32, context=96, batch=3)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stream(tiny_shards):
    return load_tokens(tiny_shards, "val")[:1300].astype(np.int64)


def _docs(tokens):
    starts, n = split_documents(tokens)
    return [tokens[a: a + k] for a, k in zip(starts, n, strict=True)]


def test_split_documents_targets_equal_the_stream():
    t = np.array([1, 5, 6, 1, 7, 1, 8, 9, 10])
    starts, n = split_documents(t)
    assert starts.tolist() == [0, 3, 5] and n.tolist() == [3, 2, 3]
    assert n.sum() == t.size - 1
    # a stream that does not start with BOS, and one that ends with BOS
    starts, n = split_documents(np.array([4, 4, 1, 5, 1]))
    assert starts.tolist() == [0, 2] and n.tolist() == [2, 2]
    assert split_documents(np.array([1]))[0].size == 0


def test_chunk_windows_end_at_the_nominal_chunk_end():
    assert chunk_window(0, 32, 96) == (0, 32)
    assert chunk_window(2, 32, 96) == (0, 96)
    assert chunk_window(5, 32, 96) == (96, 96)  # the chunk is always the last 32 inputs


def test_every_target_scored_once_with_the_streams_bytes(model, stream):
    tb = np.arange(stream.size - 1) % 3
    r = evaluate_lora(model, stream, tb, S, per_token=True)
    assert r.scored_tokens == stream.size - 1 == r.n_targets
    assert not np.isnan(r.per_token_nats).any()
    assert r.bytes_sum == int(tb.sum())
    assert math.isclose(r.nats_sum, math.fsum(r.per_token_nats), rel_tol=1e-12)
    assert math.isclose(r.val_bpb, r.nats_sum / math.log(2) / r.bytes_sum)


def test_first_chunk_of_each_document_is_the_bare_model(model, stream):
    tb = np.ones(stream.size - 1, dtype=np.int64)
    ttt = evaluate_lora(model, stream, tb, S, per_token=True)
    bare = evaluate_lora(model, stream, tb, S, per_token=True, adapt=False)
    starts, n = split_documents(stream)
    first = np.concatenate([np.arange(a, a + min(k, S.chunk))
                            for a, k in zip(starts, n, strict=True)])
    np.testing.assert_allclose(ttt.per_token_nats[first], bare.per_token_nats[first],
                               rtol=0, atol=1e-12)
    later = np.setdiff1d(np.arange(stream.size - 1), first)
    assert not np.allclose(ttt.per_token_nats[later], bare.per_token_nats[later])


def test_a_documents_scores_do_not_depend_on_the_documents_before_it(model, stream):
    docs = _docs(stream)
    target = docs[1][:150]
    alone = np.concatenate([target, [1]])
    after = np.concatenate([docs[0][:300], target, [1]])
    other = np.concatenate([docs[1][200:300], docs[0][:90], docs[0][:200], target, [1]])
    got = []
    for s in (alone, after, other):
        tb = np.ones(s.size - 1, dtype=np.int64)
        r = evaluate_lora(model, s, tb, S, per_token=True)
        got.append(r.per_token_nats[-target.size:])
    assert np.array_equal(got[0], got[1]) and np.array_equal(got[0], got[2])


def test_batch_size_changes_nothing_beyond_rounding(model, stream):
    tb = np.ones(stream.size - 1, dtype=np.int64)
    a = evaluate_lora(model, stream, tb, S)
    b = evaluate_lora(model, stream, tb, LoraSettings(rank=4, chunk=32, context=96, batch=2))
    assert math.isclose(a.nats_sum, b.nats_sum, rel_tol=1e-6)


def test_rank_shares_add_up_to_the_one_rank_result(model, stream):
    from golfeval.score.core import ScoreResult

    tb = np.arange(stream.size - 1) % 3
    one = evaluate_lora(model, stream, tb, S, per_token=True)
    parts = [evaluate_lora(model, stream, tb, S, per_token=True, rank=r, world=3)
             for r in range(3)]  # no process group: each holds its own documents' sums
    both = ScoreResult.combine(parts)
    assert both.scored_tokens == one.scored_tokens and both.bytes_sum == one.bytes_sum
    assert math.isclose(both.nats_sum, one.nats_sum, rel_tol=1e-12)
    assert np.array_equal(both.per_token_nats, one.per_token_nats)


def test_adaptation_learns_a_repeating_document(model):
    rng = np.random.default_rng(1)
    motif = rng.integers(5, 512, 24)
    doc = np.concatenate([[1], np.tile(motif, 20)])
    tb = np.ones(doc.size - 1, dtype=np.int64)
    s = LoraSettings(rank=4, chunk=32, context=96, batch=1, lr=0.05)
    ttt = evaluate_lora(model, doc, tb, s, per_token=True)
    bare = evaluate_lora(model, doc, tb, s, per_token=True, adapt=False)
    last = slice(-64, None)
    assert ttt.per_token_nats[last].mean() < bare.per_token_nats[last].mean() - 0.5


def test_model_left_as_found(model, stream):
    from golfeval.ttt.fingerprint import fingerprint, state_tensors

    before = fingerprint(state_tensors(model))
    evaluate_lora(model, stream[:300], np.ones(299, dtype=np.int64), S)
    assert fingerprint(state_tensors(model)) == before
    assert not any(p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_adapter_sites_and_settings_errors(model):
    lora = BatchedLoRA(model, ("q", "v", "head"), rank=2, batch=3)
    assert [n for n, _ in lora.sites] == ["blocks.0.attn.c_q", "blocks.1.attn.c_q",
                                          "blocks.0.attn.c_v", "blocks.1.attn.c_v"]
    assert lora.A[-1].shape == (3, 32, 2) and lora.B[-1].shape == (3, 2, 512)
    assert all(not b.detach().any() for b in lora.B)
    assert torch.equal(lora.A[0][0], lora.A[0][2])  # every document starts the same
    with pytest.raises(GolfError, match="unknown LoRA target"):
        LoraSettings(targets=("q", "zz"))
    with pytest.raises(GolfError, match="shorter than its chunk"):
        LoraSettings(chunk=256, context=128)
    with pytest.raises(GolfError, match="target_bytes"):
        evaluate_lora(model, np.array([1, 2, 3]), np.ones(5), S)


def test_a_failing_set_up_leaves_the_models_flags_as_found(model, stream, monkeypatch):
    """The adapters are built inside the restore block: when building them raises, the
    requires_grad flags the evaluation switched off come back (ModelRestore)."""
    import golfeval.ttt.lora as lora_mod

    def broken(*a, **k):
        raise RuntimeError("adapters could not be built")

    found = [p.requires_grad for p in model.parameters()]  # (the shared fixture's flags)
    next(model.parameters()).requires_grad_(True)
    flags = [p.requires_grad for p in model.parameters()]
    monkeypatch.setattr(lora_mod, "BatchedLoRA", broken)
    try:
        with pytest.raises(RuntimeError, match="could not be built"):
            evaluate_lora(model, stream, np.ones(stream.size - 1, dtype=np.int64), S)
        assert [p.requires_grad for p in model.parameters()] == flags
    finally:
        for p, f in zip(model.parameters(), found, strict=True):
            p.requires_grad_(f)
