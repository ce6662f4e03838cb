"""The April model options: each one off is exactly the baseline forward (same weights, same
bits), each one on changes the forward, and with each on (and all at once) the causality
audit passes bit for bit. The frontier config's parameter counts equal the records' logs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tinymodels import TINY, live_gpt

from golfeval.audit.causality import AuditConfig, build_mode, run_audit
from golfeval.data.shards import load_tokens
from trainer.model import GPT, GPTConfig, layer_order

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dict(TINY, num_layers=4)
# option name -> the GPTConfig keys that switch it on (tiny dims)
OPTIONS = {
    "leaky_relu2": dict(mlp_negative_slope=0.5),
    "mlp4x": dict(mlp_mult=4.0),
    "xsa": dict(xsa_last_n=4),
    "partial_rope": dict(rope_dims=4),
    "ln_scale": dict(ln_scale=True),
    "recurrence": dict(num_loops=2, loop_start=1, loop_end=2),
    "parallel_lanes": dict(parallel_start=2),
    "smear_gate": dict(smear_gate=True),
    "attn_gate": dict(attn_gate_dims=8),
    "skip_gates": dict(skip_gates=True),
    "qk_gain5": dict(qk_gain_init=5.0),
}
ALL = {k: v for opt in OPTIONS.values() for k, v in opt.items()}


def _ids(seed=0, T=24):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, TINY["vocab_size"], (2, T), generator=g)
    ids[:, 0] = 1
    ids[0, 9] = 1  # a second document in the first row
    return ids


# options that only change an initial value: the forward differs by that parameter alone
INIT_ONLY = {"qk_gain5": "q_gain"}


def _with_weights_of(model: GPT, base: GPT, keep: str = "") -> GPT:
    """Copy `base`'s weights into `model` wherever the names and shapes agree (except the
    parameters named `keep`)."""
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in base.state_dict().items():
            if keep and keep in k:
                continue
            if k in sd and sd[k].shape == v.shape:
                sd[k].copy_(v)
            elif k in sd and sd[k].shape[1:] == v.shape[1:]:  # more skip weights: share
                sd[k][: v.shape[0]].copy_(v)                  # the leading rows
    return model


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_changes_the_forward(name):
    base, _ = live_gpt(seed=1, **BASE)
    on = GPT(GPTConfig(**BASE, **OPTIONS[name]))
    if name in INIT_ONLY:  # the fresh initial value, against the baseline's
        ref = GPT(GPTConfig(**BASE)).get_parameter("blocks.0.attn.q_gain")
        assert not torch.equal(on.get_parameter("blocks.0.attn.q_gain"), ref)
    with torch.no_grad():
        for p in on.parameters():  # seeded noise on every new parameter too
            p.add_(0.05 * torch.randn_like(p))
    _with_weights_of(on, base, keep=INIT_ONLY.get(name, ""))
    ids = _ids()
    with torch.no_grad():
        a, b = base(ids), on(ids)
    assert a.shape == b.shape
    assert not torch.equal(a, b), name


def test_every_option_off_is_the_baseline_bit_for_bit():
    """Default values of the new keys are the old model: same parameters, same bits."""
    torch.manual_seed(0)
    old = GPT(GPTConfig(**BASE))
    torch.manual_seed(0)
    off = GPT(GPTConfig(**BASE, mlp_negative_slope=0.0, xsa_last_n=0, rope_dims=0,
                        ln_scale=False, num_loops=0, parallel_start=0, smear_gate=False,
                        attn_gate_dims=0, skip_gates=False))
    assert [n for n, _ in old.named_parameters()] == [n for n, _ in off.named_parameters()]
    assert all(torch.equal(p, q) for p, q in zip(old.parameters(), off.parameters(),
                                                  strict=True))
    # rope_dims = head_dim is full rotary: the same bits as 0
    full, _ = live_gpt(seed=3, **BASE, rope_dims=BASE["model_dim"] // BASE["num_heads"])
    ref, _ = live_gpt(seed=3, **BASE)
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(full(ids), ref(ids))


def test_recurrence_switched_off_is_the_unlooped_model():
    ref, _ = live_gpt(seed=4, **BASE)
    looped, _ = live_gpt(seed=5, **BASE, **OPTIONS["recurrence"])
    _with_weights_of(looped, ref)
    ids = _ids()
    with torch.no_grad():
        assert looped.looping  # a model built from a config runs its trained depth
        looped.set_looping(False)
        assert torch.equal(looped(ids), ref(ids))
        looped.set_looping(True)
        assert not torch.equal(looped(ids), ref(ids))


def test_layer_order_matches_the_records():
    cfg = GPTConfig(num_layers=11, num_loops=2, loop_start=3, loop_end=5)
    enc, dec = layer_order(cfg, looping=True)
    assert enc == [0, 1, 2, 3, 4, 5, 3, 4] and dec == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert layer_order(cfg, looping=False) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])


@pytest.mark.slow
def test_recurrence_switch_reaches_a_compiled_model():
    """Flipping the switch after torch.compile runs the looped graph (a guard fails and the
    model recompiles), never the stale unlooped one."""
    m, _ = live_gpt(seed=6, **BASE, **OPTIONS["recurrence"])
    ids = _ids()
    with torch.no_grad():
        m.set_looping(False)
        eager_off = m(ids)
        m.set_looping(True)
        eager_on = m(ids)
        compiled = torch.compile(m, backend="eager", dynamic=False)  # dynamo's guards
        m.set_looping(False)
        assert torch.equal(compiled(ids), eager_off)
        m.set_looping(True)
        assert torch.equal(compiled(ids), eager_on)
        assert not torch.equal(eager_on, eager_off)


def test_smear_gate_never_mixes_across_a_document_start():
    m, _ = live_gpt(seed=7, **BASE, smear_gate=True)
    doc2 = torch.tensor([[1, 22, 3, 8, 40]])
    a = torch.cat([torch.tensor([[1, 5, 9, 13]]), doc2], dim=1)
    b = torch.cat([torch.tensor([[1, 77, 60, 2]]), doc2], dim=1)
    from trainer.model import document_mask

    with torch.no_grad():
        ya, yb = m(a, document_mask(a)), m(b, document_mask(b))
    assert torch.equal(ya[0, 4:], yb[0, 4:])  # the second document never sees the first


def test_everything_on_trains():
    m, _ = live_gpt(seed=8, **BASE, **ALL)
    ids = _ids()
    loss = m.loss(ids[:, :-1], ids[:, 1:])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.fixture(scope="module")
def stream(tiny_shards):
    return load_tokens(tiny_shards, "val")[:420].astype(np.int64)


@pytest.mark.parametrize("name", sorted(OPTIONS) + ["all"])
def test_causality_audit_passes_with_the_option_on(name, tables, stream):
    opts = ALL if name == "all" else OPTIONS[name]
    model = live_gpt(seed=9, **{**BASE, "vocab_size": tables.vocab_size}, **opts)[0]
    model = model.eval().requires_grad_(False)
    for isolation in (False, True):
        mode = build_mode("sliding", model, AuditConfig(seq_len=64, stride=16, batch=4,
                                                         doc_isolation=isolation))
        report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=3)
        assert report.passed, (name, isolation, report.to_dict())
        assert all(c.max_abs_diff == 0 for c in report.cuts)


def test_frontier_parameter_counts_match_the_records():
    """model_params of the 2026-04-05 (loop 4-5 x2) and 2026-04-14 (loop 3-5 x2, parallel
    lanes from layer 8) records, from the hyperparameters their logs print."""
    from trainer.config import load_config
    from trainer.params import count_params

    a = load_config("frontier", ["qk_gain_init=4.0", "loop_start=4", "loop_end=5",
                                 "parallel_start=0", "smear_gate=false",
                                 "attn_gate_dims=0"])
    assert count_params(a)["total"] == 35_943_512
    b = load_config("frontier", ["smear_gate=false", "attn_gate_dims=0"])
    assert count_params(b)["total"] == 35_944_602
