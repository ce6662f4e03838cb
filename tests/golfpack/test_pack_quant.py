"""Quantizers: the exactness contract QAT and the packer rely on."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from golfpack.errors import GolfError
from golfpack.quant.rows import (
    GPTQ_LITE_PERCENTILES,
    Scheme,
    SchemeError,
    clip_values,
    dequantize,
    fake_quant,
    format_scheme,
    parse_scheme,
    quantize,
)

CLIP_SPECS = ["amax", "pct(0.999)", "gptq-lite", "gptq-lite:matrix", "sdclip(3)", "sdclip(12)",
              "amax:floor", "gptq-lite:floor"]


def _trained_like(rows=48, cols=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    chi2 = torch.randn(4, rows, cols, generator=g).square().sum(0)
    t = torch.randn(rows, cols, generator=g) / (chi2 / 4).sqrt()  # Student-t, 4 dof
    scale = torch.exp(torch.randn(rows, 1, generator=g) * 0.5) * 0.02
    return (t * scale).float()


def _bits(x):
    return x.contiguous().view(torch.int32)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("clip", CLIP_SPECS)
def test_fake_quant_is_dequant_of_quant_bit_for_bit(bits, clip):
    w = _trained_like(seed=bits)
    w[3] = 0.0  # a zero row
    w[5] = 1e-9  # a row below fp16's range
    scheme = parse_scheme(f"int{bits}:{clip}")
    r = quantize(w, scheme)
    hat = dequantize(r.codes, r.scales)
    fq = fake_quant(w, scheme)
    assert torch.equal(_bits(fq), _bits(hat))
    assert torch.isfinite(hat).all()
    assert r.codes.dtype == torch.int8 and r.scales.dtype == torch.float16
    assert int(r.codes.abs().max()) <= scheme.qmax
    assert torch.all(r.codes[3] == 0) and torch.all(hat[3] == 0)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("clip", CLIP_SPECS)
def test_error_within_half_step_inside_clip(bits, clip):
    w = _trained_like(seed=100 + bits)
    scheme = parse_scheme(f"int{bits}:{clip}")
    r = quantize(w, scheme)
    s = r.scales.float()[:, None]
    hat = dequantize(r.codes, r.scales)
    clip_v = clip_values(w, scheme)[:, None]
    assert torch.all(clip_v <= scheme.qmax * s * (1 + 1e-6))  # scale rounded up
    inside = w.abs() <= clip_v
    err = (w - hat).abs()
    bound = s / 2 * (1 + 1e-5) + 1e-12
    assert torch.all(err[inside.expand_as(err)] <= bound.expand_as(err)[inside])


def test_fake_quant_straight_through_gradient():
    w = _trained_like().requires_grad_(True)
    out = fake_quant(w, parse_scheme("int6:gptq-lite"))
    (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    assert torch.equal(w.grad, torch.arange(w.numel()).view_as(w).float())


def test_fake_quant_under_torch_compile():
    w = _trained_like(16, 32)
    scheme = parse_scheme("int6:gptq-lite")
    try:
        fn = torch.compile(lambda x: fake_quant(x, scheme), backend="eager", fullgraph=True)
        got = fn(w)
    except Exception as exc:  # pragma: no cover - compile unavailable on the platform
        pytest.skip(f"torch.compile unavailable: {exc}")
    r = quantize(w, scheme)
    assert torch.equal(_bits(got), _bits(dequantize(r.codes, r.scales)))


def test_gptq_lite_picks_lowest_mse_per_row_and_matrix():
    w = _trained_like(32, 64, seed=7)
    row = quantize(w, parse_scheme("int4:gptq-lite"))
    mat = quantize(w, parse_scheme("int4:gptq-lite:matrix"))
    err_row = (dequantize(row.codes, row.scales) - w).square().sum()
    err_mat = (dequantize(mat.codes, mat.scales) - w).square().sum()
    assert err_row <= err_mat
    for p in GPTQ_LITE_PERCENTILES:
        single = quantize(w, parse_scheme(f"int4:pct({p})"))
        per_row_err = (dequantize(single.codes, single.scales) - w).square().sum(1)
        assert torch.all((dequantize(row.codes, row.scales) - w).square().sum(1)
                         <= per_row_err * (1 + 1e-6))


def test_floor_counts_rows_it_changed():
    w = _trained_like(10, 20)  # row scales ~0.02: clip/qmax << 1/qmax, floor fires everywhere
    w[0] *= 1000.0
    r = quantize(w, parse_scheme("int8:amax:floor"))
    assert r.floored_rows == 9
    assert quantize(w, parse_scheme("int8:amax")).floored_rows == 0


def test_one_d_empty_and_constant():
    scheme = parse_scheme("int6")
    r = quantize(torch.tensor([0.5, -1.0, 0.25]), scheme)
    assert r.codes.shape == (1, 3)
    assert dequantize(r.codes, r.scales).shape == (1, 3)
    e = quantize(torch.zeros(4, 0), scheme)
    assert e.codes.shape == (4, 0) and e.scales.shape == (4,)
    c = quantize(torch.full((3, 5), 0.3), scheme)
    assert torch.all(c.codes == 31)
    assert torch.allclose(dequantize(c.codes, c.scales), torch.full((3, 5), 0.3), rtol=1e-3)
    with pytest.raises(GolfError):
        quantize(torch.tensor([1.0, float("nan")]), scheme)


def test_passthrough_never_stores_inf_or_nan():
    from golfpack.quant.qmodel import quantize_state_dict

    q = quantize_state_dict({"a.w": torch.tensor([1e5, 1.0]), "b.w": torch.tensor([2.0, 1.0])})
    e = {x.name: x for x in q}
    assert e["a.w"].scheme == "fp32" and e["a.w"].stats["fp16_overflow"]  # fp16 would be inf
    assert e["b.w"].scheme == "fp16" and "fp16_overflow" not in e["b.w"].stats
    assert q.state_dict()["a.w"].tolist() == [1e5, 1.0]
    for bad in (float("nan"), float("inf")):
        with pytest.raises(GolfError, match="'c.w' holds NaN or inf"):
            quantize_state_dict({"c.w": torch.tensor([bad, 1.0])})


def test_huge_values_do_not_overflow():
    w = torch.tensor([[1e9, -1e9, 3.0]])
    r = quantize(w, parse_scheme("int8"))
    assert torch.isfinite(r.scales.float()).all() and float(r.scales[0]) == 65504.0


@pytest.mark.parametrize("text,expected", [
    ("int6", Scheme("int", 6)),
    ("int6:gptq-lite", Scheme("int", 6, "gptq-lite")),
    ("int8:sdclip(20)", Scheme("int", 8, "sdclip", 20.0)),
    ("int5:pct(0.9999)", Scheme("int", 5, "pct", 0.9999)),
    ("int6:gptq-lite:matrix:floor", Scheme("int", 6, "gptq-lite", None, True, True)),
    ("fp16", Scheme("fp16")),
    ("FP32", Scheme("fp32")),
    ("raw", Scheme("raw")),
])
def test_parse_scheme(text, expected):
    assert parse_scheme(text) == expected
    assert parse_scheme(format_scheme(expected)) == expected


@pytest.mark.parametrize("bad", ["", "int9", "int1", "int6:foo", "int6:pct", "int6:pct(101)",
                                 "int6:sdclip(x)", "fp16:amax", "float", "int6:amax:matrix",
                                 "int6:amax(3)"])
def test_parse_scheme_errors(bad):
    with pytest.raises(SchemeError):
        parse_scheme(bad)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 8), rows=st.integers(0, 7), cols=st.integers(0, 9),
       seed=st.integers(0, 2**31 - 1), clip=st.sampled_from(CLIP_SPECS))
def test_quant_identity_hypothesis(bits, rows, cols, seed, clip):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * torch.rand(1, generator=g) * 3
    scheme = parse_scheme(f"int{bits}:{clip}")
    r = quantize(w, scheme)
    assert r.codes.shape == (rows, cols)
    assert torch.equal(_bits(fake_quant(w, scheme)), _bits(dequantize(r.codes, r.scales)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("clip", ["amax", "gptq-lite", "sdclip(12)"])
def test_fake_quant_cuda_compiled_matches_cpu_quantize(clip):
    """On a GPU: inductor-compiled fake_quant gives the bits the packer will store."""
    w = _trained_like(256, 512, seed=3)
    scheme = parse_scheme(f"int6:{clip}")
    fn = torch.compile(lambda x: fake_quant(x, scheme), fullgraph=True)
    got = fn(w.cuda()).cpu()
    r = quantize(w, scheme)
    assert torch.equal(_bits(got), _bits(dequantize(r.codes, r.scales)))


def test_pct_in_percent_and_baseline_rounding_roundtrip():
    s = parse_scheme("int8:pct(99.99984):baseline")
    assert s.quantile == pytest.approx(0.9999984) and s.baseline
    assert parse_scheme(format_scheme(s)) == s
    assert parse_scheme("int8:pct(0.5)").quantile == 0.5
    w = torch.randn(8, 300)
    # the baseline's rounding: clip, codes from the float32 scale, stored scale fp16-nearest
    r = quantize(w, s)
    clip = torch.quantile(w.abs(), 0.9999984, dim=1)
    scale = (clip / 127).clamp_min(1 / 127)
    codes = torch.round(torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
                        / scale[:, None])
    assert torch.equal(r.codes, codes.to(torch.int8))
    assert torch.equal(r.scales, scale.half())
    hat = fake_quant(w, s)
    assert torch.equal(hat, dequantize(r.codes, r.scales))
