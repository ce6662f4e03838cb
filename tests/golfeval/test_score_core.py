"""Core scoring on a tiny model: every scored loss against a direct computation from its own
context, coverage, batch and rank invariance, document isolation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tinymodels import live_gpt

from golfeval.score.core import ScoreResult, make_plan, score_tokens, score_windows
from golfeval.score.windows import sliding_plan

V, BOS = 64, 1


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return live_gpt(vocab_size=V, model_dim=64)[0].eval()


def _stream(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, n).astype(np.uint16), rng.integers(0, 5, n - 1)


def _direct(model, tokens, plan):
    """Each scored target's loss from a fresh forward over exactly its own context."""
    nats = np.full(plan.n_targets, np.nan)
    with torch.no_grad():
        for s, n, o in zip(plan.starts, plan.lengths, plan.offsets, strict=True):
            for t in range(s + o, s + n):
                ctx = torch.tensor(tokens[s:t + 1].astype(np.int64))[None]
                logits = model(ctx)[0, -1]
                nats[t] = F.cross_entropy(logits, torch.tensor(int(tokens[t + 1]))).item()
    return nats


@pytest.mark.parametrize("mode,n", [("sliding", 161), ("sliding", 171), ("flat", 171)])
def test_matches_direct_per_position(model, mode, n):
    tokens, tb = _stream(n)
    r = score_tokens(model, tokens, tb, mode=mode, seq_len=32, stride=8, batch=3,
                     per_token=True)
    plan = make_plan(n, mode, 32, 8)
    want = _direct(model, tokens, plan)
    got = r.per_token_nats
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=2e-5)
    scored = ~np.isnan(want)
    assert r.scored_tokens == int(scored.sum()) == plan.scored_tokens
    assert r.bytes_sum == int(tb[scored].sum())
    assert math.isclose(r.nats_sum, float(np.nansum(want)), rel_tol=1e-6)
    assert math.isclose(r.val_loss, r.nats_sum / r.scored_tokens)
    assert math.isclose(r.val_bpb, r.nats_sum / math.log(2) / r.bytes_sum)
    if mode == "sliding":
        assert r.scored_tokens == n - 1  # every target exactly once
    else:
        assert r.scored_tokens == (n - 1) // 32 * 32  # tail dropped


@pytest.mark.parametrize("n", [2, 10, 33, 1024, 1025, 1030, 1024 + 64 * 7 + 1, 1024 + 64 * 7,
                               5000, 5003])
def test_sliding_coverage_exactly_once(n):
    plan = sliding_plan(n, 1024, 64)
    assert plan.coverage().tolist() == [1] * (n - 1)
    assert plan.scored_tokens == n - 1
    later = plan.offsets[1:]
    assert (later >= 1024 - 64).all()  # context >= L - S for every later window
    assert (plan.lengths - plan.offsets)[1:].max(initial=0) <= 64


def test_batch_invariance(model):
    tokens, tb = _stream(700, seed=1)
    runs = {b: score_tokens(model, tokens, tb, seq_len=64, stride=16, batch=b, per_token=True)
            for b in (1, 7, 64)}
    for b in (7, 64):
        assert math.isclose(runs[b].nats_sum, runs[1].nats_sum, rel_tol=1e-9, abs_tol=0)
        assert runs[b].bytes_sum == runs[1].bytes_sum
        assert runs[b].scored_tokens == runs[1].scored_tokens == 699
        np.testing.assert_allclose(runs[b].per_token_nats, runs[1].per_token_nats,
                                   rtol=1e-9, atol=0)


def test_rank_shares_add_up(model):
    """Contiguous shares of the plan, scored apart and combined, equal one rank."""
    tokens, tb = _stream(600, seed=2)
    plan = sliding_plan(600, 64, 16)
    one = score_windows(model, tokens, plan, tb, batch=4, per_token=True)
    for world in (2, 3):
        parts = [score_windows(model, tokens, plan, tb, batch=4, rank=r, world=world,
                               per_token=True) for r in range(world)]
        assert all(p.ranks == 1 for p in parts)
        both = ScoreResult.combine(parts)
        assert both.ranks == world and both.windows == len(plan)
        assert math.isclose(both.nats_sum, one.nats_sum, rel_tol=1e-9, abs_tol=0)
        assert (both.bytes_sum, both.scored_tokens) == (one.bytes_sum, one.scored_tokens)
        np.testing.assert_array_equal(both.per_token_nats, one.per_token_nats)


def test_doc_isolation_equals_documents_alone(model):
    """Documents no longer than L - S tokens: isolated scoring of the joined stream equals
    scoring each document (plus the next BOS as its last target) on its own."""
    rng = np.random.default_rng(3)
    docs = []
    for _ in range(12):
        body = rng.integers(2, V, int(rng.integers(3, 24)))
        docs.append(np.concatenate(([BOS], body)).astype(np.uint16))
    stream = np.concatenate(docs)
    tb = np.ones(stream.size - 1, dtype=np.int64)
    joint = score_tokens(model, stream, tb, seq_len=32, stride=8, batch=5, doc_isolation=True,
                         per_token=True)
    plain = score_tokens(model, stream, tb, seq_len=32, stride=8, batch=5, per_token=True)
    alone, pos = [], 0
    for i, d in enumerate(docs):
        end = pos + d.size + (1 if i + 1 < len(docs) else 0)
        seg = stream[pos:end]
        r = score_tokens(model, seg, np.ones(seg.size - 1, np.int64), seq_len=32, stride=8,
                         per_token=True)
        alone.append(r.per_token_nats)
        pos += d.size
    alone = np.concatenate(alone)
    np.testing.assert_allclose(joint.per_token_nats, alone, rtol=0, atol=2e-5)
    assert not np.allclose(plain.per_token_nats, alone, atol=1e-3)  # isolation mattered


def test_input_checks(model):
    tokens, tb = _stream(100)
    plan = sliding_plan(100, 32, 8)
    from golfpack.errors import GolfError

    with pytest.raises(GolfError, match="target_bytes"):
        score_windows(model, tokens, plan, tb[:-1])
    with pytest.raises(GolfError, match="stream has"):
        score_windows(model, tokens[:-1], plan, tb)
    with pytest.raises(GolfError, match="unknown mode"):
        make_plan(100, "strided")
    with pytest.raises(GolfError, match="stride"):
        make_plan(100, "sliding", 32, 64)


def test_forward_only_model_is_scored_whole(model):
    """A model without hidden()/logits() is run whole and gathered: same numbers."""

    class Whole(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, idx, attn_mask=None):
            return self.inner(idx, attn_mask)

    tokens, tb = _stream(300, seed=4)
    a = score_tokens(model, tokens, tb, seq_len=64, stride=16, batch=4)
    b = score_tokens(Whole(model), tokens, tb, seq_len=64, stride=16, batch=4)
    assert math.isclose(a.nats_sum, b.nats_sum, rel_tol=1e-6)
