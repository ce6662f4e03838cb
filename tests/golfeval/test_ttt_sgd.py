"""Score-first chunked SGD TTT on a tiny model: chunk plans cover every target once, the
no-adaptation run is the sliding score, adaptation helps, weights are restored, learning
rate schedule, and the sums do not depend on the rank count (gloo, 2 processes vs 1)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from tinymodels import frozen_gpt

from golfeval.score.core import score_tokens
from golfeval.ttt.sgd import SGDSettings, chunk_lr, chunk_plans, evaluate_sgd
from golfpack.errors import GolfError

S = SGDSettings(chunk_tokens=448, seq_len=64, stride=16, train_batch=4, lr=0.05,
                score_batch=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    return frozen_gpt()


def _stream(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    motif = rng.integers(5, 512, 40)
    t = np.tile(motif, n // 40 + 1)[:n].copy()  # repetitive: training on it must help
    noise = rng.random(n) < 0.2
    t[noise] = rng.integers(5, 512, int(noise.sum()))
    t[::300] = 1
    return t.astype(np.int64)


@pytest.mark.parametrize("n,L,S_,C", [(1500, 64, 16, 448), (1500, 64, 16, 500),
                                      (1000, 64, 16, 50), (70, 64, 16, 448), (2, 64, 16, 8)])
def test_chunk_plans_cover_each_target_once_inside_its_chunk(n, L, S_, C):
    plans = chunk_plans(n, L, S_, C)
    cover = np.zeros(n - 1, dtype=int)
    for k, p in enumerate(plans):
        lo, hi = p.starts + p.offsets, p.starts + p.lengths
        assert (lo >= k * C).all() and (hi <= min((k + 1) * C, n - 1)).all()
        assert (p.lengths <= L).all()
        assert ((p.offsets >= L - S_) | (p.starts == 0)).all()  # full context
        cover += p.coverage()
    assert cover.tolist() == [1] * (n - 1)


def test_without_adaptation_it_is_the_sliding_score(model):
    t = _stream()
    tb = np.ones(t.size - 1, dtype=np.int64)
    chunked = evaluate_sgd(model, t, tb, S, adapt=False, per_token=True)
    sliding = score_tokens(model, t, tb, mode="sliding", seq_len=64, stride=16, batch=8,
                           per_token=True)
    # 448 = 64 + 24 * 16: chunk boundaries fall on window boundaries, same windows
    np.testing.assert_allclose(chunked.per_token_nats, sliding.per_token_nats, rtol=1e-6)
    assert chunked.scored_tokens == sliding.scored_tokens == t.size - 1


def test_adaptation_helps_and_weights_are_restored(model):
    from golfeval.ttt.fingerprint import fingerprint, state_tensors

    t = _stream()
    tb = np.arange(t.size - 1) % 4
    before = fingerprint(state_tensors(model))
    ttt = evaluate_sgd(model, t, tb, S, per_token=True)
    bare = evaluate_sgd(model, t, tb, S, adapt=False, per_token=True)
    assert fingerprint(state_tensors(model)) == before
    assert not any(p.requires_grad for p in model.parameters())
    first = slice(0, S.chunk_tokens)
    np.testing.assert_array_equal(ttt.per_token_nats[first], bare.per_token_nats[first])
    assert ttt.val_loss < bare.val_loss - 0.1
    assert ttt.scored_tokens == t.size - 1 and ttt.bytes_sum == int(tb.sum())
    assert math.isclose(ttt.nats_sum, math.fsum(ttt.per_token_nats), rel_tol=1e-12)


def test_cosine_schedule_over_trained_chunks():
    s = SGDSettings(lr=0.002)
    assert chunk_lr(s, 0, 5) == pytest.approx(0.002)
    assert chunk_lr(s, 2, 5) == pytest.approx(0.001)
    assert chunk_lr(s, 3, 5) > 0  # the last trained chunk still learns
    with pytest.raises(GolfError):
        SGDSettings(stride=128, seq_len=64)
    with pytest.raises(GolfError):
        SGDSettings(momentum=1.0)


def test_several_ranks_need_a_process_group(model):
    t = _stream(300)
    with pytest.raises(GolfError, match="process group"):
        evaluate_sgd(model, t, np.ones(t.size - 1), S, rank=0, world=2)


def _rank_worker(rank, world, store, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    try:
        t = _stream()
        tb = np.arange(t.size - 1) % 4
        r = evaluate_sgd(_model(), t, tb, S, rank=rank, world=world)
        if rank == 0:
            with open(out, "w") as fh:
                json.dump({"nats": r.nats_sum, "bytes": r.bytes_sum,
                           "scored": r.scored_tokens, "ranks": r.ranks}, fh)
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_one_rank_sums(tmp_path):
    import torch.multiprocessing as mp

    t = _stream()
    tb = np.arange(t.size - 1) % 4
    one = evaluate_sgd(_model(), t, tb, S)
    out = tmp_path / "two.json"
    # fork: the workers need no fresh interpreter (and start in a fraction of spawn's time)
    mp.start_processes(_rank_worker, args=(2, os.fspath(tmp_path / "store"), os.fspath(out)),
                       nprocs=2, join=True, start_method="fork")
    two = json.loads(out.read_text())
    assert two["ranks"] == 2
    assert two["scored"] == one.scored_tokens and two["bytes"] == one.bytes_sum
    # scoring sums are exact; training sums gradients over ranks in another order, so the
    # adapted weights agree to float32 rounding (seen: 1.5e-10 relative)
    assert math.isclose(two["nats"], one.nats_sum, rel_tol=1e-7)
