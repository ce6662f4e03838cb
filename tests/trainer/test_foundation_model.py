"""The reference model: exact baseline size, forward/backward on CPU, config round trip."""

from __future__ import annotations

import torch

from trainer.model import GPT, GPTConfig, document_mask, token_nats


def tiny(**kw):
    cfg = dict(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def test_baseline_parameter_count():
    assert GPT(GPTConfig()).num_params() == 17_059_912


def test_config_round_trip():
    cfg = GPTConfig(num_layers=11, mlp_mult=3)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    import json

    assert GPTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_forward_backward_cpu():
    torch.manual_seed(0)
    m = tiny()
    idx = torch.randint(0, 64, (2, 16))
    logits = m(idx)
    assert logits.shape == (2, 16, 64) and logits.dtype == torch.float32
    assert logits.abs().max() <= 30.0
    loss = m.loss(idx[:, :-1], idx[:, 1:])
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    nats = token_nats(m(idx[:, :-1]), idx[:, 1:])
    assert nats.shape == (2, 15)
    assert torch.allclose(nats.mean(), loss.detach(), atol=1e-6)


def test_causality():
    torch.manual_seed(0)
    m = tiny()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    idx = torch.randint(0, 64, (1, 20))
    other = idx.clone()
    other[0, 12:] = torch.randint(0, 64, (8,))
    a, b = m(idx), m(other)
    assert torch.equal(a[0, :12], b[0, :12])


def test_document_mask_isolates_documents():
    torch.manual_seed(0)
    m = tiny()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    doc1 = torch.tensor([[1, 5, 9, 13, 7]])
    doc2 = torch.tensor([[1, 22, 3, 8]])
    both = torch.cat([doc1, doc2], dim=1)
    joint = m(both, attn_mask=document_mask(both))
    alone = m(doc2, attn_mask=document_mask(doc2))
    assert torch.allclose(joint[0, 5:], alone[0], atol=1e-5)


def test_zero_init_output_projections():
    m = tiny()
    for block in m.blocks:
        assert block.attn.proj.weight.abs().sum() == 0
        assert block.mlp.proj.weight.abs().sum() == 0
        assert torch.allclose(block.attn.q_gain, torch.full((4,), 1.5))
