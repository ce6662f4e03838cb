"""Fingerprints see every bit; the score-first ledger refuses state that changes while a
chunk is scored, adapting before scoring, and scoring that hands back no sums."""

from __future__ import annotations

import pytest
import torch

from golfeval.ttt.fingerprint import (
    LegalityError,
    ScoreFirstLedger,
    drop_inference_caches,
    fingerprint,
    state_tensors,
    unchanged,
)
from trainer.model import GPT, GPTConfig


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=4,
                         num_kv_heads=2))


def test_fingerprint_sees_one_bit_anywhere():
    m = _model()
    base = fingerprint(state_tensors(m))
    assert fingerprint(state_tensors(m)) == base
    for name, p in list(m.named_parameters())[:: 3]:
        with torch.no_grad():
            flat = p.view(-1)
            i = flat.numel() // 2
            old = flat[i].clone()
            bits = flat[i: i + 1].view(torch.int32)
            bits ^= 1  # flip the lowest mantissa bit
            assert fingerprint(state_tensors(m)) != base, name
            flat[i] = old
    assert fingerprint(state_tensors(m)) == base


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64, torch.int64, torch.bool,
                                   torch.uint8])
def test_fingerprint_dtypes_and_shapes(dtype):
    t = torch.arange(12).reshape(3, 4).to(dtype)
    assert fingerprint([t]) == fingerprint([t.clone()])
    assert fingerprint([t]) != fingerprint([t.reshape(4, 3)])
    assert fingerprint([t, t]) != fingerprint([t])
    u = t.clone()
    u[1, 1] = 0 if dtype != torch.bool else not bool(u[1, 1])
    assert fingerprint([u]) != fingerprint([t])


def test_swapped_values_change_the_fingerprint():
    t = torch.tensor([1.0, 2.0, 3.0])
    assert fingerprint([t]) != fingerprint([t.flip(0)])


def test_optimizer_state_is_part_of_the_state():
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.0, momentum=0.9)
    m(torch.randint(0, 64, (1, 8))).sum().backward()
    opt.step()
    before = fingerprint(state_tensors(m, opt))
    opt.zero_grad()
    m(torch.randint(0, 64, (1, 8))).sum().backward()
    opt.step()  # lr 0: weights stay, momentum moves
    assert fingerprint(state_tensors(m)) == fingerprint(state_tensors(m))
    assert fingerprint(state_tensors(m, opt)) != before


def test_ledger_accepts_score_then_adapt():
    m = _model()
    ledger = ScoreFirstLedger(lambda: state_tensors(m))
    for chunk in range(3):
        with ledger.scoring(chunk) as rec:
            rec.nats_sum, rec.tokens = 1.5, 4
        with ledger.adapting(chunk), torch.no_grad():
            m.tok_emb.weight.add_(1.0)
    assert ledger.checks == 3 and sorted(ledger.scored) == [0, 1, 2]


def test_ledger_raises_when_parameters_change_during_scoring():
    m = _model()
    ledger = ScoreFirstLedger(lambda: state_tensors(m))
    with pytest.raises(LegalityError, match="changed while chunk 0 was scored"):
        with ledger.scoring(0) as rec:
            with torch.no_grad():
                m.blocks[1].attn.c_v.weight[0, 0] += 1e-3
            rec.nats_sum, rec.tokens = 1.0, 1


def test_ledger_raises_on_adapt_before_score_and_missing_sums():
    m = _model()
    ledger = ScoreFirstLedger(lambda: state_tensors(m))
    with pytest.raises(LegalityError, match="before it was scored"):
        with ledger.adapting(0):
            pass
    with pytest.raises(LegalityError, match="no sums"):
        with ledger.scoring(1):
            pass
    with pytest.raises(LegalityError, match="host floats"):
        with ledger.scoring(2) as rec:
            rec.nats_sum, rec.tokens = torch.tensor(1.0), 1
    with ledger.scoring(3) as rec:
        rec.nats_sum, rec.tokens = 1.0, 1
    with pytest.raises(LegalityError, match="scored twice"):
        with ledger.scoring(3):
            pass


def test_unchanged_and_inference_caches():
    m = _model()
    with torch.inference_mode():
        m(torch.randint(0, 64, (1, 8)))
    with unchanged(lambda: state_tensors(m), "a forward"):
        drop_inference_caches(m)
        m.loss(torch.randint(0, 64, (1, 8)), torch.randint(0, 64, (1, 8))).backward()
    with pytest.raises(LegalityError, match="during a step"):
        with unchanged(lambda: state_tensors(m), "a step"):
            torch.optim.SGD(m.parameters(), lr=0.1).step()
