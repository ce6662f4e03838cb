"""GPTQ: better than rounding where inputs correlate, exact bookkeeping, safe fallbacks."""

from __future__ import annotations

import pytest
import torch

from golfpack.errors import GolfError
from golfpack.hessian import gptq
from golfpack.quant import rows as quant

pytestmark = pytest.mark.usefixtures("one_thread")


def _correlated(n=4000, cols=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5
    x = torch.randn(n, cols, generator=g) @ mix + 0.2 * torch.randn(n, cols, generator=g)
    return (x.T @ x).double()


def _weight(rows=48, cols=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * 0.05


def _plain_err(w, scheme, H):
    r = quant.quantize(w, scheme)
    return float(gptq.row_errors(w, quant.dequantize(r.codes, r.scales), H.float()).sum())


@pytest.mark.parametrize("spec", ["int6:amax", "int4:amax", "int6:gptq-lite",
                                  "int5:sdclip(6)", "int8:pct(0.999)", "int3:gptq-lite:matrix"])
def test_gptq_beats_rounding_on_correlated_inputs(spec):
    H, w, scheme = _correlated(), _weight(), quant.parse_scheme(spec)
    r = gptq.quantize_gptq(w, H, scheme)
    assert r.fallback is None
    assert r.err < 0.9 * r.err_round
    assert r.err < 0.9 * _plain_err(w, scheme, H)
    # Same format as the quantizers: int8 codes within ±qmax, fp16 scales, exact dequant.
    assert r.codes.dtype == torch.int8 and r.scales.dtype == torch.float16
    assert int(r.codes.abs().max()) <= scheme.qmax
    assert float(gptq.row_errors(w, quant.dequantize(r.codes, r.scales), H.float()).sum()) \
        == pytest.approx(r.err, rel=1e-4)


def test_error_read_off_the_algorithm_matches_the_quadratic_form():
    H, w = _correlated(), _weight()
    prep = gptq.prepare_hessian(H)
    s = quant.quantize(w, quant.parse_scheme("int5:amax")).scales.float()
    q, err = gptq.gptq_rows(w, s, torch.full((w.shape[0],), 15.0), prep)
    direct = gptq.row_errors(w, q * s[:, None], prep.H)
    torch.testing.assert_close(err, direct, rtol=1e-4, atol=1e-9)


def test_act_order_permutation_round_trip():
    H, w = _correlated(), _weight()
    prep = gptq.prepare_hessian(H, act_order=True)
    assert not torch.equal(prep.perm, torch.arange(H.shape[0]))
    s = quant.quantize(w, quant.parse_scheme("int4:amax")).scales.float()
    qmax = torch.full((w.shape[0],), 7.0)
    q_act, _ = gptq.gptq_rows(w, s, qmax, prep)
    # Running without act-order on pre-permuted columns, then un-permuting, is the same.
    p = prep.perm
    prep2 = gptq.prepare_hessian(H[p][:, p], act_order=False)
    q_manual, _ = gptq.gptq_rows(w[:, p], s, qmax, prep2)
    assert torch.equal(q_act, q_manual[:, torch.argsort(p)])
    # With a diagonal H nothing propagates: GPTQ is plain rounding in the original order.
    Hd = torch.diag(torch.linspace(1.0, 5.0, w.shape[1])).double()
    q_diag, _ = gptq.gptq_rows(w, s, qmax, gptq.prepare_hessian(Hd))
    assert torch.equal(q_diag, torch.round(w / s[:, None]).clamp(-7, 7) + 0.0)


def test_dead_columns_keep_their_weights_and_stay_finite():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 64, generator=g)
    x[:, [5, 17, 40]] = 0.0
    H = (x.T @ x).double()
    w = _weight(32, 64)
    scheme = quant.parse_scheme("int4:amax")
    r = gptq.quantize_gptq(w, H, scheme)
    assert r.fallback is None and bool(torch.isfinite(r.scales.float()).all())
    plain = quant.quantize(w, scheme)
    for c in (5, 17, 40):  # dead columns: plain rounding, weights kept (not zeroed)
        assert torch.equal(r.codes[:, c], plain.codes[:, c])
    assert bool(r.codes[:, 5].any())
    all_dead = gptq.quantize_gptq(w, torch.zeros(64, 64, dtype=torch.float64), scheme)
    assert "dead" in all_dead.fallback
    assert torch.equal(all_dead.codes, plain.codes)


def test_cholesky_failure_falls_back_to_plain_rounding():
    w = _weight(16, 2)
    H = torch.tensor([[1.0, 3.0], [3.0, 1.0]], dtype=torch.float64)  # indefinite
    scheme = quant.parse_scheme("int6:gptq-lite")
    r = gptq.quantize_gptq(w, H, scheme)
    assert r.fallback and "Cholesky" in r.fallback
    plain = quant.quantize(w, scheme)
    assert torch.equal(r.codes, plain.codes) and torch.equal(r.scales, plain.scales)
    with pytest.raises(GolfError, match="NaN"):
        gptq.prepare_hessian(torch.full((2, 2), float("nan")))
    with pytest.raises(GolfError, match="columns"):
        gptq.quantize_gptq(_weight(4, 8), _correlated(cols=6), scheme)


def test_hessian_selection_of_clip_candidates():
    H, w = _correlated(), _weight()
    w[0, 3] = 0.6  # an outlier makes amax a poor clip for row 0
    lite = quant.parse_scheme("int4:gptq-lite")
    full = gptq.quantize_gptq(w, H, lite, select="hessian")
    diag = gptq.quantize_gptq(w, H, lite, select="diag")
    amax = gptq.quantize_gptq(w, H, quant.parse_scheme("int4:amax"))
    assert full.err <= diag.err * 1.0001 and full.err < amax.err
    with pytest.raises(GolfError, match="selection"):
        gptq.quantize_gptq(w, H, lite, select="mse")


def test_deterministic_and_groups_match_single_tensors():
    H, w = _correlated(), _weight()
    w2 = _weight(24, 96, seed=7)
    scheme = quant.parse_scheme("int6:gptq-lite")
    prep = gptq.prepare_hessian(H)
    a = gptq.quantize_gptq(w, prep, scheme)
    b = gptq.quantize_gptq(w, prep, scheme)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scales, b.scales)
    grouped = gptq.quantize_group({"a": w, "b": w2}, {"a": scheme, "b": scheme}, prep)
    assert (grouped["a"].codes != a.codes).float().mean() < 0.002  # rows are independent
    assert grouped["b"].err == pytest.approx(gptq.quantize_gptq(w2, prep, scheme).err, rel=1e-4)
