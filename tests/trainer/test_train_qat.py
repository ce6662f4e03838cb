"""QAT: the fake-quantized forward equals the export's dequantized weights, the gradient is
straight-through, and the on/off switch reaches an already compiled model."""

from __future__ import annotations

import pytest
import torch
from tinymodels import live_gpt

from golfpack.quant.rows import dequantize, quantize
from trainer.qat import expand_spec, install_qat, remove_qat, weight_schemes
from trainer.train import prime_rotary


def _model(seed=0, layers=2):
    return live_gpt(seed, vocab_size=64, num_layers=layers, num_heads=2, num_kv_heads=1)[0]


def test_qat_forward_is_the_exported_grid_and_gradient_is_straight_through():
    m = _model()
    spec = "int4"
    assert expand_spec(spec) == "@control=fp32;*.attn.*=int4;*.mlp.*=int4"
    sw = install_qat(m, spec, on=True)
    schemes = weight_schemes(m, spec)
    assert schemes["blocks.0.mlp.fc.weight"].bits == 4
    assert "tok_emb.weight" in sw.schemes  # the tied head trains on its export grid too
    assert not any("q_gain" in n or "resid_mix" in n for n in sw.schemes)
    lin = m.blocks[0].attn.c_q
    r = quantize(lin.weight.detach(), schemes["blocks.0.attn.c_q.weight"])
    assert torch.equal(lin.effective_weight(), dequantize(r.codes, r.scales))
    w = lin.weight
    (lin.effective_weight() * torch.arange(w.numel()).view_as(w)).sum().backward()
    assert torch.equal(w.grad, torch.arange(w.numel(), dtype=w.dtype).view_as(w))
    sw.set(False)
    assert torch.equal(lin.effective_weight(), lin.weight)
    remove_qat(m)
    assert lin.weight_transform is None and m.head_weight_transform is None


@pytest.mark.slow  # compiling costs ~7 s on 2 busy cores
@pytest.mark.parametrize("device, backend", [
    ("cpu", "aot_eager"),
    pytest.param("cuda", "inductor", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="the inductor/CUDA variant needs a GPU")),
])
def test_qat_switch_reaches_a_compiled_model(device, backend):
    """Flipping QAT on after torch.compile changes the compiled forward, with no recompile.

    A Python flag read inside the forward is resolved by Dynamo at capture time: either it is
    baked into the graph as a constant (the compiled output would not change after the flip:
    the "late QAT never ran" bug) or Dynamo guards on it and recompiles. This test fails in
    both cases: it asserts the output changes to exactly the eager QAT output AND that no new
    graph was captured, which holds only if the switch is a graph input (a tensor). Graph
    capture is Dynamo's and does not depend on the backend, so the cheap aot_eager backend
    (seconds on CPU, where inductor takes ~30 s) exercises the same mechanism; the CUDA run
    in docs/training.md checks the same switch under inductor.
    """
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    m = _model(layers=1).to(device)
    x = torch.randint(0, 64, (2, 16), device=device)
    prime_rotary(m, 16, x.device)  # x.device, not "cuda": the cache compares devices
    sw = install_qat(m, "int3", on=False)
    compiled = torch.compile(m, backend=backend, dynamic=False)
    with torch.no_grad():
        compiled(x)  # any first-call recompilation happens here, not at the flip
        off = compiled(x)
        graphs = counters["stats"]["unique_graphs"]
        sw.set(True)
        on = compiled(x)
        now = counters["stats"]["unique_graphs"]
        assert now == graphs, f"the switch forced a recompile ({graphs} -> {now} graphs)"
        eager_on = m(x)
        sw.set(False)
        back = compiled(x)
    assert (off - on).abs().max() > 1e-3, "the compiled forward ignored the switch"
    if backend == "aot_eager":  # same kernels as eager: bit-identical
        assert torch.equal(on, eager_on) and torch.equal(back, off)
    else:  # inductor fuses differently: equal to rounding
        d_on, d_back = (on - eager_on).abs().max().item(), (back - off).abs().max().item()
        assert d_on < 1e-4 and d_back < 1e-4, (d_on, d_back)


@pytest.mark.parametrize("bad", ["int9", "foo=int6", "*.nothing.*=int6"])
def test_bad_qat_specs_are_refused(bad):
    from golfpack.errors import GolfError

    with pytest.raises(GolfError):
        install_qat(_model(), bad)
