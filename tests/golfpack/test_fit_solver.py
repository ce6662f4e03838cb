"""The fit's knapsack and its real-bytes loop, on synthetic tensors and a fake encoder whose
true sizes differ from the estimates per tensor (as real coders do)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from golfpack.errors import CheckFailed
from golfpack.hessian import fit, gptq
from golfpack.quant.rows import Scheme

pytestmark = pytest.mark.usefixtures("one_thread")


def _choices(n=12, seed=0):
    rnd = random.Random(seed)
    out = {}
    for t in range(n):
        params = rnd.choice([4096, 16384, 65536, 262144])
        sens = rnd.uniform(0.1, 10.0)
        opts = []
        for b in range(4, 9):
            for c in (1.0, 2.0, 4.0):
                rate = max(0.3, b - 4 + math.log2(c) + 1.2)  # bits per param
                err = sens * params * 4.0 ** (-rate) * rnd.uniform(0.9, 1.1)
                opts.append(fit.Option(Scheme("int", b, "sdclip", 7.0), err, params * rate / 8))
        out[f"t{t}"] = fit.TensorChoices(f"t{t}", (params,), opts)
    return out


class FakeEncoder:
    """True size = estimate × a per-tensor factor + fixed overhead; counts its calls."""

    def __init__(self, choices, other=5000, seed=1):
        rnd = random.Random(seed)
        self.factor = {n: rnd.uniform(0.93, 1.08) for n in choices}
        self.other, self.calls = other, 0

    def __call__(self, plan):
        self.calls += 1
        tb = {n: o.est_bytes * self.factor[n] for n, o in plan.items()}
        return fit.Encoded(int(math.ceil(sum(tb.values()) + self.other)), tb)


def test_solve_never_exceeds_target_and_fills_it():
    ch = list(_choices().values())
    lo = sum(min(o.est_bytes for o in tc.options) for tc in ch)
    hi = sum(max(o.est_bytes for o in tc.options) for tc in ch)
    prev = math.inf
    for frac in (0.0, 0.1, 0.3, 0.5, 0.8, 1.0):
        target = lo + frac * (hi - lo)
        picks = fit.solve(ch, target)
        used = sum(tc.options[i].est_bytes for tc, i in zip(ch, picks, strict=True))
        loss = sum(tc.options[i].err for tc, i in zip(ch, picks, strict=True))
        assert used <= target + 1e-6
        assert loss <= prev + 1e-9  # more bytes never predict more loss
        prev = loss
        if 0.1 <= frac < 1.0:
            assert used >= target * 0.98
    with pytest.raises(CheckFailed, match="smallest"):
        fit.solve(ch, lo * 0.9)


@pytest.mark.parametrize("frac", [0.15, 0.4, 0.7, 0.95])
def test_fit_lands_under_and_within_half_a_percent(frac):
    choices = _choices()
    enc = FakeEncoder(choices)
    lo = sum(min(o.est_bytes for o in tc.options) for tc in choices.values()) * 1.1
    hi = sum(max(o.est_bytes for o in tc.options) for tc in choices.values()) * 0.9
    budget = int(lo + frac * (hi - lo) + enc.other)
    res = fit.fit_to_budget(choices, budget, enc, other_bytes=0.0)
    assert res.encoded.total_bytes <= budget
    assert res.encoded.total_bytes >= budget * 0.995
    assert enc.calls <= 8
    rows = res.table()
    assert len(rows) == len(choices) and all(r["actual_bytes"] is not None for r in rows)


def test_fit_repairs_when_every_estimate_is_too_low():
    choices = _choices(seed=3)
    enc = FakeEncoder(choices, seed=4)
    enc.factor = {n: 1.3 for n in choices}  # the coder is 30% worse than estimated
    lo = sum(min(o.est_bytes for o in tc.options) for tc in choices.values()) * 1.4
    res = fit.fit_to_budget(choices, int(lo * 1.5), enc, max_iter=2)
    assert res.encoded.total_bytes <= int(lo * 1.5)
    with pytest.raises(CheckFailed):
        fit.fit_to_budget(choices, int(lo / 1.4 * 0.5), enc)


def test_candidate_ladder_and_entropy():
    cands = fit.candidate_schemes()
    assert {c.bits for c in cands} == {4, 5, 6, 7, 8}
    assert all(c.clip_arg is None or c.clip_arg >= fit.MIN_CLAMP_K for c in cands)
    assert len(set(cands)) == len(cands)
    codes = torch.tensor([[0, 0, 1, -1], [3, 3, 3, 3]], dtype=torch.int8)
    h = fit.code_entropy_bytes(codes)
    assert h.tolist() == pytest.approx([1.5 * 4 / 8, 0.0])


def test_lqer_is_chosen_only_when_it_pays():
    """A correction that lowers the error enough for its bytes is taken when bytes are
    available; one that gains nothing never is."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 64, generator=g) @ (torch.randn(64, 64, generator=g) / 8)
    H = (x.T @ x).double()
    w = 0.02 * torch.randn(96, 64, generator=g)
    w += 0.05 * torch.randn(96, 2, generator=g) @ torch.randn(2, 64, generator=g)
    prep = gptq.prepare_hessian(H)
    schemes = [Scheme("int", 3, "gptq-lite"), Scheme("int", 4, "gptq-lite")]
    ch = fit.measure_options({"w": w}, {"w": prep}, [["w"]], schemes, lqer_rank=2, lqer_top=1)
    opts = ch["w"].options
    with_lqer = [o for o in opts if o.lqer_rank]
    assert with_lqer and all(o.err < p.err for o, p in zip(with_lqer, opts, strict=False))
    big = fit.solve([ch["w"]], max(o.est_bytes for o in opts) + 1)
    assert opts[big[0]].lqer_rank == 2
    # Make the correction useless: it is then never picked, whatever the budget.
    for o in with_lqer:
        o.err = next(p.err for p in opts if p.scheme == o.scheme and not p.lqer_rank)
    for target in (min(o.est_bytes for o in opts) + 1, max(o.est_bytes for o in opts) + 1):
        assert not opts[fit.solve([ch["w"]], target)[0]].lqer_rank


def test_solve_is_exact_on_small_instances():
    """Against brute force over every plan: the byte-grid DP finds the optimum (integer
    byte costs, target below the grid size), where a Lagrangian sweep alone can miss it."""
    import itertools

    rnd = random.Random(5)
    for trial in range(20):
        ch = []
        for t in range(4):
            opts = [fit.Option(Scheme("int", 4, "sdclip", 7.0), rnd.uniform(0, 10),
                               float(rnd.randint(50, 400))) for _ in range(4)]
            if trial % 2:
                opts.append(fit.Option(Scheme("fp16"), 0.01, float(rnd.randint(200, 500))))
            ch.append(fit.TensorChoices(f"t{t}", (100,), opts))
        target = sum(min(o.est_bytes for o in c.options) for c in ch) + rnd.randint(0, 800)

        def tot(p, what, ch=ch):
            return sum(getattr(c.options[i], what) for c, i in zip(ch, p, strict=True))

        best = min((p for p in itertools.product(*[range(len(c.options)) for c in ch])
                    if tot(p, "est_bytes") <= target), key=lambda p: tot(p, "err"))
        picks = fit.solve(ch, target)
        assert tot(picks, "est_bytes") <= target
        assert tot(picks, "err") == pytest.approx(tot(best, "err"), rel=1e-12)


def test_passthrough_options_keep_their_own_byte_ratio():
    tc = fit.TensorChoices("t", (100,), [fit.Option(Scheme("int", 6, "gptq-lite"), 1.0, 80.0),
                                         fit.Option(Scheme("fp16"), 0.0, 200.0)])
    fit._update_ratios([tc], [1], fit.Encoded(0, {"t": 150.0}))
    assert tc.pass_ratio == pytest.approx(0.75) and tc.ratio == 1.0
    assert tc.cost(1)[1] == pytest.approx(150.0) and tc.cost(0)[1] == pytest.approx(80.0)
