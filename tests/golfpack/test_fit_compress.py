"""compress --fit / --gptq end to end on a tiny model: real encodes land under the budget and
within half a percent of it, artifacts load back, LQER entries round-trip, runs repeat."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from golfpack import accounting, checkpoint
from golfpack.artifact import encode_artifact, parse_artifact
from golfpack.errors import ArtifactError, CheckFailed
from golfpack.hessian import calib, gptq, lqer
from golfpack.hessian import pipeline as fitpack
from golfpack.quant import lowrank
from golfpack.quant import rows as quant
from golfpack.quant.qmodel import QuantizedModel
from trainer.model import GPT, GPTConfig

CFG = dict(vocab_size=128, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2)
SPEC = "@control=fp32;*=int6:gptq-lite"  # no @small rule: the tiny matrices get fitted

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**CFG))
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, std=0.1)
    batches = [torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(i))
               for i in range(4)]
    hs = calib.collect_hessians(m, batches)
    return m, {k: v.detach() for k, v in m.state_dict().items()}, hs, batches


@pytest.fixture(scope="module")
def setup(tiny):
    """Candidates measured once (the expensive part); each test fits budgets against it."""
    return fitpack.prepare_fit(tiny[1], tiny[2], SPEC, bits=(4, 6, 8))


def _fit(setup, budget, codec="zlib"):
    return fitpack.run_fit(setup, CFG, budget, accounting.code_bytes(), codec=codec)


def test_fit_lands_under_the_budget_and_within_half_a_percent(setup, tiny):
    losses = []
    for budget in (34_000, 41_000, 48_000, 55_000):
        data, rep = _fit(setup, budget)
        assert rep["total_bytes"] == len(data) <= budget
        assert len(data) >= budget * 0.995, rep["fit"]["iterations"]
        losses.append(rep["fit"]["predicted_loss"])
    assert losses == sorted(losses, reverse=True) and losses[0] > losses[-1]
    alloc = rep["fit"]["allocation"]
    assert {r["name"] for r in alloc} == set(tiny[2].names())
    assert all(r["actual_bytes"] > 0 and r["est_bytes"] > 0 for r in alloc)
    assert set(parse_artifact(data).state_dict()) == set(tiny[1])
    again, _ = _fit(setup, 55_000)
    assert again == data  # same setup, same budget: the same bytes
    # More than the widest candidates need: everything at its best (fp16 passthrough: the
    # least error of all candidates), under the cap.
    big, rep = _fit(setup, 200_000)
    assert len(big) < 200_000 and rep["fit"]["fill"] < 0.7
    assert {r["scheme"] for r in rep["fit"]["allocation"]} == {"fp16"}


def test_fit_with_measured_sensitivity_and_lqer(tiny):
    m, sd, hs, batches = tiny
    st = fitpack.prepare_fit(sd, hs, SPEC, bits=(3, 5, 8), lqer_rank=2, lqer_top=2,
                             sensitivity="family",
                             loss_fn=fitpack.calibration_loss_fn(m, batches[:1]))
    data, rep = _fit(st, 30_000)
    assert len(data) <= 30_000
    alphas = {r["alpha"] for r in rep["fit"]["allocation"]}
    assert len(alphas) > 1 and all(x > 0 for x in alphas)
    assert any(o.lqer_rank for tc in st.choices.values() for o in tc.options)
    assert torch.equal(next(iter(m.state_dict().values())), next(iter(sd.values())))


def test_lqer_entry_round_trips_through_the_artifact(tiny):
    m, sd, hs, _ = tiny
    name = "blocks.0.mlp.fc.weight"
    prep = gptq.prepare_hessian(hs[name])
    scheme = quant.parse_scheme("int3:gptq-lite")
    r = gptq.quantize_gptq(sd[name], prep, scheme)
    base = gptq.gptq_entry(name, sd[name], r, scheme)
    lr = lqer.fit_lowrank(sd[name], quant.dequantize(r.codes, r.scales), prep, rank=3)
    assert lr.err_after < lr.err_before
    entry = lqer.lqer_entry(base, lr)
    others = [gptq.gptq_entry(n, sd[n], gptq.quantize_gptq(sd[n], hs[n], scheme), scheme)
              for n in ("blocks.1.mlp.fc.weight",)]
    data, report = encode_artifact(QuantizedModel([entry] + others), CFG)
    back = parse_artifact(data).state_dict()
    want = quant.dequantize(r.codes, r.scales) + lr.correction()
    assert torch.equal(back[name], want)
    assert sum(t["bytes"] for t in report["tensors"]) + report["header_bytes"] == len(data)
    # Damaged factor tables give one ArtifactError, never another exception.
    entry.meta["rank"] = 99
    with pytest.raises(ArtifactError, match="rank"):
        lowrank.reconstruct_entry(entry)
    entry.meta["rank"] = 3
    entry.parts["lr_b"].data = entry.parts["lr_b"].data[:-1]
    with pytest.raises(ArtifactError, match="lr_b"):
        lowrank.reconstruct_entry(entry)


def _write_shard(path, tokens):
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def test_gptq_compress_in_process(tiny):
    _, sd, hs, _ = tiny
    data, rep = fitpack.compress_hessian(sd, CFG, hs, 10**6, accounting.code_bytes(), SPEC,
                                         codec="zlib")
    assert rep["gptq"]["tensors"] == 13 and not rep["gptq"]["fallbacks"]
    assert rep["total_bytes"] == len(data)
    back = parse_artifact(data).state_dict()
    name = "blocks.1.mlp.proj.weight"
    r = gptq.quantize_gptq(sd[name], hs[name], quant.parse_scheme("int6:gptq-lite"))
    assert torch.equal(back[name], quant.dequantize(r.codes, r.scales))


def _checkpoint_and_train_shard(tiny, folder):
    """The tiny model saved as a checkpoint in `folder`, beside one train shard to calibrate on."""
    _, sd, _, _ = tiny
    ck = folder / "m.safetensors"
    checkpoint.save(ck, sd, dict(CFG))
    _write_shard(folder / "fineweb_train_000000.bin",
                 np.random.default_rng(0).integers(0, 128, 5000))
    return ck


def test_cli_fit(tiny, tmp_path):
    from click.testing import CliRunner

    from golfpack.cli import main

    ck = _checkpoint_and_train_shard(tiny, tmp_path)
    out = tmp_path / "f.golf"
    args = ["compress", str(ck), "-o", str(out), "--fit", "--budget", "41000", "--sensitivity",
            "hessian", "--scheme", SPEC, "--calib", str(tmp_path), "--calib-batches", "2",
            "--calib-tokens", "128", "--calib-seq-len", "32", "--json", "--codec", "zlib",
            "--fit-bits", "4,6,8"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    # the decoder a submission ships is code: code + artifact land under the budget
    assert 0.995 * 41000 <= rep["total_bytes"] <= 41000
    assert rep["total_bytes"] == os.path.getsize(out) + rep["decoder_bytes"] > 0
    assert rep["fit"]["allocation"] and rep["fit"]["iterations"]
    r = CliRunner().invoke(main, args)  # never overwrites without --force
    assert r.exit_code == 2 and "exists" in r.stderr
    # the fit counts the code: code + artifact land under the same budget
    code = tmp_path / "train_gpt.py"
    code.write_text("x = 1\n" * 1000)  # 6,000 bytes
    out2 = tmp_path / "g.golf"
    args2 = [*args[:3], str(out2), *args[4:], "--code", str(code)]
    args2[args2.index("41000")] = "51000"  # room for 6,000 code bytes + the raw decoder
    r = CliRunner().invoke(main, args2)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["code_bytes"] == 6000 + rep["decoder_bytes"]
    assert rep["model_bytes"] == os.path.getsize(out2)
    assert 0.995 * 51000 <= rep["total_bytes"] <= 51000


def test_fit_works_on_a_model_whose_matrices_are_all_small(tiny, tmp_path):
    """The default spec keeps every matrix of a tiny model fp16 (@small): the fit still
    allocates all of them, passthrough being one candidate among the int ones."""
    from click.testing import CliRunner

    from golfpack.cli import main

    _, sd, hs, _ = tiny
    st = fitpack.prepare_fit(sd, hs, None)
    assert set(st.choices) == set(hs.names())
    assert all(any(o.scheme.kind == "fp16" for o in tc.options) for tc in st.choices.values())
    kinds, filled = set(), 0
    # 70 and 100 kB: the ladder alone stops at 99.41 / 98.94 % (nothing between int8 and
    # fp16); the LQER filler spends the rest
    for budget in (40_000, 55_000, 70_000, 85_000, 100_000):
        data, rep = _fit(st, budget)
        assert budget * 0.995 <= rep["total_bytes"] == len(data) <= budget, rep["fit"]
        kinds |= {r["scheme"].split(":")[0] for r in rep["fit"]["allocation"]}
        f = rep["fit"]["filler"]
        if f["lqer_ranks_added"]:
            filled += 1
            assert f["fill_before"] < 0.995 and rep["fit"]["predicted_loss"] < \
                f["predicted_loss_before"]
            assert any(r["lqer_rank"] for r in rep["fit"]["allocation"])
        back = parse_artifact(data)
        assert set(back.state_dict()) == set(sd)
    assert filled >= 2
    assert "fp16" in kinds and kinds & {"int4", "int6", "int8"}  # both kinds get chosen
    # the CLI, default scheme (the case that used to exit 2)
    ck = _checkpoint_and_train_shard(tiny, tmp_path)
    out = tmp_path / "f.golf"
    r = CliRunner().invoke(main, [
        "compress", str(ck), "-o", str(out), "--fit", "--budget", "60000", "--sensitivity",
        "hessian", "--calib", str(tmp_path), "--calib-batches", "2", "--calib-tokens", "128",
        "--calib-seq-len", "32", "--json", "--codec", "zlib", "--fit-bits", "4,6,8"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert 0.995 * 60000 <= rep["total_bytes"] <= 60000
    assert rep["lookup_mix"]["chosen"] == "auto"


def test_filler_never_lands_over_the_budget(tiny):
    """An encoder that charges 5× the packed size of every correction (a coder far worse
    than the first guess): the filler learns it from the real encodes and still never
    keeps a plan over the budget; the decoded LQER tensors are the measured ones."""
    from golfpack.hessian import fill, fit

    _, sd, hs, _ = tiny
    st = fitpack.prepare_fit(sd, hs, None)
    enc = fitpack.PlanEncoder(st, CFG, "zlib", None, 0)

    def costly(plan):
        e = enc(plan)
        extra = 4 * sum(o.lqer_bytes for o in plan.values())
        return fit.Encoded(e.total_bytes + extra, e.tensor_bytes, e.blob)

    for budget in (70_000, 100_000):
        res = fit.fit_to_budget(st.choices, budget, costly, 30_000.0)
        out = fill.fill_slack(res, costly, fill.LqerLadder(enc))
        assert out.encoded.total_bytes <= budget
        assert out.encoded.total_bytes >= res.encoded.total_bytes
        rows = [r for r in out.iterations if r.get("filler")]
        assert rows and len(rows) <= fill.MAX_ENCODES
    lq = {n: o for n, o in out.picks.items() if o.lqer_rank}
    assert lq, out.iterations
    back = parse_artifact(out.encoded.blob).state_dict()
    n, o = next(iter(lq.items()))
    err = float(gptq.row_errors(sd[n].float(), back[n].float(), st.preps[n].H).sum())
    assert err == pytest.approx(o.err, rel=1e-3)


def test_passthrough_is_chosen_where_it_is_cheapest():
    """A matrix with one column: int8 needs a 2-byte scale per row on top of its codes,
    fp16 needs 2 bytes per value and has (almost) no error: the fit stores it in float."""
    torch.manual_seed(1)
    w = {"narrow": torch.randn(64, 1), "wide": torch.randn(64, 256)}
    hs = calib.Hessians(H={"narrow": torch.eye(1, dtype=torch.float64) * 4,
                           "wide": torch.eye(256, dtype=torch.float64)},
                        n_tokens={"narrow": 1, "wide": 1}, groups=[["narrow"], ["wide"]])
    st = fitpack.prepare_fit(w, hs, "*=int6:gptq-lite", bits=(4, 6, 8))
    nar = st.choices["narrow"]
    fp16 = next(o for o in nar.options if o.scheme.kind == "fp16")
    assert all(o.est_bytes > fp16.est_bytes and o.err > fp16.err
               for o in nar.options if o is not fp16)
    data, rep = _fit(st, 20_000)
    alloc = {r["name"]: r["scheme"] for r in rep["fit"]["allocation"]}
    assert alloc["narrow"] == "fp16" and alloc["wide"].startswith("int")
    assert len(data) <= 20_000  # (two tensors: the ladder is too coarse to promise 0.5%)


def test_impossible_budget_is_a_check_failure(setup):
    with pytest.raises(CheckFailed, match="smallest candidates"):
        _fit(setup, 3000)


def test_cli_lookup_mix_option(tiny, tmp_path):
    from click.testing import CliRunner

    from golfpack.cli import main

    ck = _checkpoint_and_train_shard(tiny, tmp_path)
    base = ["compress", str(ck), "--gptq", "--scheme", SPEC, "--calib", str(tmp_path),
            "--calib-batches", "2", "--calib-tokens", "128", "--calib-seq-len", "32",
            "--json", "--codec", "zlib", "--budget", "100000"]
    for bad in ("-1", "nan", "inf", "x"):
        r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "x.golf"), "--lookup-mix", bad])
        assert r.exit_code == 2 and "lookup-mix" in r.output, r.output
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "a.golf"), "--lookup-mix", "0"])
    assert r.exit_code == 0, r.output
    assert "lookup_mix" not in json.loads(r.stdout)
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "b.golf"), "--lookup-mix", "1.5"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["lookup_mix"]["lambda"] == 1.5


def test_lookup_mix_and_sensitivities_share_one_calibration_loss(tiny, tmp_path, monkeypatch):
    """--fit --sensitivity family --lookup-mix auto builds the calibration loss once and
    measures the unquantized model's loss once (it used to do both twice); the artifact is
    the one the two separate losses gave (they measure the same numbers)."""
    from golfpack.accounting import add_decoder
    from golfpack.decoder import FEATURES, decoder_row
    from golfpack.hessian.lookupmix import FIT_SCHEME, MIX_CANDIDATES
    from golfpack.quant.scheme import family
    from trainer.model import GPT

    ck = _checkpoint_and_train_shard(tiny, tmp_path)
    calls = {"hidden": 0, "losses": 0}
    hidden, loss_fn = GPT.hidden, fitpack.calibration_loss_fn

    def counted_hidden(self, *a, **k):
        calls["hidden"] += 1
        return hidden(self, *a, **k)

    def counted_loss(*a, **k):
        calls["losses"] += 1
        return loss_fn(*a, **k)

    monkeypatch.setattr(GPT, "hidden", counted_hidden)
    monkeypatch.setattr(fitpack, "calibration_loss_fn", counted_loss)
    kw = dict(calib_batches=4, calib_tokens=128, calib_seq_len=32)
    rep = fitpack.compress_with_hessians(
        ck, tmp_path / "a.golf", scheme_spec=SPEC, codec="zlib", tokenizer=None,
        config_path=None, code_files=(), code_mode="raw", budget=60_000, allow_over=False,
        force=False, progress=False, fit=True, calib=str(tmp_path), fit_bits=(4, 6, 8),
        sensitivity="family", lookup_mix="auto", **kw)
    assert rep["lookup_mix"]["chosen"] == "auto"
    families = {family(r["name"]) for r in rep["fit"]["allocation"]}
    n_loss = fitpack.LOSS_BATCHES
    # 4 batches for H, 4 for the lookup curvature, then on the loss batches: one per λ
    # candidate, the base loss once, one per family probe
    assert calls == {"losses": 1, "hidden": 4 + fitpack.LOOKUP_BATCHES
                     + n_loss * (len(MIX_CANDIDATES) + 1 + len(families))}
    # the same run with a loss of its own for the mix and one for the sensitivities (as
    # before): the same bytes, one more base loss
    calls.update(hidden=0, losses=0)
    state, cfg, model, hs, batches = fitpack.calibrate_checkpoint(
        ck, None, str(tmp_path), kw["calib_batches"], kw["calib_tokens"], kw["calib_seq_len"])
    hs, mix = fitpack.apply_lookup_mix(model, state, hs, batches, SPEC, "auto",
                                       float_scheme=quant.parse_scheme(FIT_SCHEME))
    code = accounting.code_bytes((), "raw")
    code = add_decoder(code, decoder_row(FEATURES, "raw", (), True))
    data, old = fitpack.compress_hessian(
        state, cfg, hs, 60_000, code, SPEC, do_fit=True, codec="zlib", bits=(4, 6, 8),
        sensitivity="family", loss_fn=fitpack.calibration_loss_fn(model, batches[:n_loss]))
    assert calls["losses"] == 2 and calls["hidden"] == 4 + fitpack.LOOKUP_BATCHES + n_loss * (
        len(MIX_CANDIDATES) + 2 + len(families))
    assert (tmp_path / "a.golf").read_bytes() == data
    assert rep["lookup_mix"] == {**mix, "seconds": rep["lookup_mix"]["seconds"]}
    assert rep["fit"]["allocation"] == old["fit"]["allocation"]


def test_lqer_ladder_takes_one_svd_per_tensor_and_scheme(tiny, monkeypatch):
    """The filler's rank ladder truncates one SVD of the weighted error per tensor and scheme
    instead of taking one per rank: the same corrections to the bit (the truncated SVD of the
    same matrix), so the same options, the same artifact bytes."""
    from golfpack.hessian import fill, fit

    m, sd, hs, _ = tiny
    name = "blocks.0.mlp.fc.weight"
    prep = gptq.prepare_hessian(hs[name])
    r = gptq.quantize_gptq(sd[name], prep, quant.parse_scheme("int3:gptq-lite"))
    w_hat = quant.dequantize(r.codes, r.scales)
    svd = lqer.error_svd(sd[name], w_hat, prep)
    assert svd.max_rank == min(sd[name].shape)
    for rank in (1, 2, 5, 17, svd.max_rank, svd.max_rank + 3):
        a = lqer.fit_lowrank(sd[name], w_hat, prep, rank)
        b = lqer.fit_lowrank(sd[name], w_hat, prep, rank, svd=svd)
        assert all(torch.equal(getattr(a, f), getattr(b, f))
                   for f in ("a_codes", "a_scale", "b_codes", "b_scales"))
        assert (a.err_before, a.err_after) == (b.err_before, b.err_after)
    # the filler: a shared-SVD ladder against one that takes a fresh SVD for every rank
    st = fitpack.prepare_fit(sd, hs, None)
    enc = fitpack.PlanEncoder(st, CFG, "zlib", None, 0)
    res = fit.fit_to_budget(st.choices, 70_000, enc, 30_000.0)
    cache = dict(st.cache)
    svds = []
    real_svd = lqer.error_svd
    monkeypatch.setattr(lqer, "error_svd", lambda *a: svds.append(a) or real_svd(*a))

    class PerRank(fill.LqerLadder):
        def __call__(self, *a):
            self.svds.clear()
            return super().__call__(*a)

    out = {}
    for kind, ladder in (("shared", fill.LqerLadder(enc)), ("per_rank", PerRank(enc))):
        st.cache.clear()
        st.cache.update(cache)
        svds.clear()
        f = fill.fill_slack(res, enc, ladder)
        out[kind] = (f.encoded.blob, ladder.memo, len(svds))
    fitted = [k for k, o in out["shared"][1].items() if o is not None]
    assert sum(o.lqer_rank for o in f.picks.values()) > 0
    assert out["shared"][0] == out["per_rank"][0]
    assert out["shared"][1] == out["per_rank"][1]
    assert out["shared"][2] == len({(n, sc) for n, sc, _ in out["shared"][1]}) < len(fitted)
    assert out["per_rank"][2] == len(out["per_rank"][1])
