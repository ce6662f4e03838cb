"""Significance: Welch and one-sample tests against scipy and the shared known answer, margin
conversion, pooled runs, warnings, verdicts and exit codes, seeds-needed and the plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from golfeval.cli import main
from golfeval.records.significance import (
    Sample,
    compare,
    load_sample,
    one_sample,
    seeds_needed,
    welch,
)

LONG = ("track_10min_16mb", "2026-03-18_LongContextSeq2048")
LONG_BPB = [1.20576485, 1.20617460, 1.20715923]


@pytest.mark.parametrize("seed", range(5))
def test_welch_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    new = rng.normal(1.08, 0.0007, size=3 + seed)
    old = rng.normal(1.081, 0.0012, size=3 + (seed % 3))
    ours = welch(list(new), list(old))
    ref = stats.ttest_ind(new, old, equal_var=False, alternative="less")
    assert ours["t"] == pytest.approx(ref.statistic, rel=1e-10)  # mean(new) - mean(old)
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours["df"] == pytest.approx(ref.df, rel=1e-10)
    delta = 0.0005  # H1: mean(new) < mean(old) - delta  <=>  new vs (old - delta)
    shifted = welch(list(new), list(old), delta)
    ref = stats.ttest_ind(new, old - delta, equal_var=False, alternative="less")
    assert shifted["t"] == pytest.approx(ref.statistic, rel=1e-9)
    assert shifted["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    one = one_sample(list(new), 1.081)
    ref = stats.ttest_1samp(new, 1.081, alternative="less")
    assert (one["t"], one["p"]) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))


def test_known_answer_long_context_one_sample(shared_records):
    res = one_sample(LONG_BPB, 1.2193657)
    assert round(res["t"], 2) == -31.42 and res["df"] == 2 and round(res["p"], 5) == 0.00051
    runner = CliRunner()
    out = runner.invoke(main, ["significance", str(shared_records.joinpath(*LONG)),
                               "--sota-bpb", "1.2193657", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["new"]["values"] == LONG_BPB  # all 3 seeds, though the claim is the best run
    assert round(doc["one_sample"]["t"], 2) == -31.42 and doc["one_sample"]["df"] == 2
    assert round(doc["one_sample"]["p"], 5) == 0.00051
    assert doc["verdicts"]["readme"]["significant"] and doc["verdicts"]["frontier"]["significant"]


def test_margin_converted_through_new_runs_bpb_per_nat(shared_records):
    new = load_sample([str(shared_records.joinpath(*LONG))], "NEW")
    ratio = math.fsum(b / v for b, v in zip(new.bpb, new.loss, strict=True)) / 3
    res = compare(new, sota_bpb=1.2243657)
    assert res["bpb_per_nat"] == pytest.approx(ratio) and ratio == pytest.approx(0.5922, abs=2e-4)
    assert res["margin_bpb"] == pytest.approx(0.005 * ratio)
    assert round(res["margin_bpb"], 5) == 0.00296  # challenge facts: sp1024
    m = res["one_sample_margin"]
    assert m["margin_bpb"] == res["margin_bpb"]
    assert m["t"] == pytest.approx(one_sample(LONG_BPB, 1.2243657 - res["margin_bpb"])["t"])
    sp8192 = shared_records.joinpath("track_10min_16mb",
                                     "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2")
    res = compare(load_sample([str(sp8192)], "NEW"), sota_bpb=1.1)
    assert round(res["margin_bpb"], 5) == 0.00194  # challenge facts: sp8192


def test_pooled_runs_and_comma_values(shared_records, tmp_path):
    d = shared_records / "track_10min_16mb"
    pooled = load_sample([str(d / "2026-04-14_MultiPhaseGlobalSGD_PhasedTTT"),
                          str(d / "2026-04-18_PR1626_CaseOps_Taper"), "1.07,1.071"], "NEW")
    assert pooled.n == 3 + 3 + 2 and pooled.bpb[-2:] == [1.07, 1.071]
    assert pooled.loss[-1] is None and len(pooled.tokenizers) == 2
    log = d / "2026-03-23_LeakyReLU_LegalTTT_ParallelMuon" / "train_seed42.log"
    single = load_sample([str(log)], "NEW")
    assert single.bpb == [1.12002032] and single.kinds == {"ttt"}
    with pytest.raises(Exception, match="not a record folder"):
        load_sample([str(shared_records)], "NEW")
    with pytest.raises(Exception, match="comma-separated"):
        load_sample([str(tmp_path / "nope")], "NEW")


def test_warnings_for_small_n_tokenizers_and_kinds(shared_records):
    d = shared_records / "track_10min_16mb"
    new = load_sample([str(d / "2026-04-18_PR1626_CaseOps_Taper")], "NEW")
    old = load_sample([str(d / "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2")], "OLD")
    res = compare(new, old)
    text = " ".join(res["warnings"])
    assert "different tokenizers" in text and "different eval kinds" in text
    assert res["delta_nats"] == pytest.approx(res["delta_bpb"] / res["bpb_per_nat"])
    small = compare(Sample("NEW", [1.0, 1.01], [None, None]), sota_bpb=1.1, margin_nats=0.0)
    assert any("n = 2 < 3" in w for w in small["warnings"])
    assert small["one_sample_margin"]["margin_bpb"] == 0.0
    nomargin = compare(Sample("NEW", [1.0, 1.01, 1.02], [None] * 3), sota_bpb=1.1)
    assert nomargin["margin_bpb"] is None and nomargin["verdicts"]["readme"]["significant"] is None
    assert nomargin["verdicts"]["frontier"]["significant"] is True


def test_verdicts_and_exit_codes():
    runner = CliRunner()
    # Better by ~0.001 bpb with small spread: frontier yes, README (0.003 bpb margin) no.
    args = ["significance", "1.0790,1.0792,1.0788", "--sota", "1.0800,1.0803,1.0798",
            "--bpb-per-nat", "0.5922"]
    res = runner.invoke(main, args + ["--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["verdicts"] == {
        "readme": {**doc["verdicts"]["readme"], "significant": False},
        "frontier": {**doc["verdicts"]["frontier"], "significant": True}}
    assert doc["welch"]["p"] < 0.25 and doc["welch_margin"]["margin_bpb"] == pytest.approx(
        0.005 * 0.5922)
    assert set(doc["welch"]) >= {"t", "df", "p"} and doc["one_sample"] is None
    assert runner.invoke(main, args + ["--rule", "frontier"]).exit_code == 0
    human = runner.invoke(main, args)
    assert "NOT significant" in human.stdout and "welch margin" in human.stdout
    assert runner.invoke(main, ["significance", "1.0,1.1"]).exit_code == 2
    assert runner.invoke(main, ["significance", "1.0", "--sota-bpb", "1.1"]).exit_code == 2
    res = runner.invoke(main, ["significance", "1.0,1.01,1.02", "--sota-bpb", "1.1"])
    assert res.exit_code == 2 and "bpb-per-nat" in res.output
    # A single OLD value is tested as a fixed SOTA value.
    res = runner.invoke(main, ["significance", "1.0,1.01,1.02", "--sota", "1.1",
                               "--rule", "frontier", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["one_sample"]["df"] == 2


def test_seeds_needed():
    res = seeds_needed(0.002, 0.001, alpha=0.01, power=0.8, design="one-sample")
    n = res["n"]
    assert res["power"] >= 0.8 and res["table"][-2]["power"] < 0.8
    crit = stats.t.ppf(0.99, n - 1)
    assert res["power"] == pytest.approx(stats.nct.sf(crit, n - 1, 0.002 / 0.001 * math.sqrt(n)))
    w = seeds_needed(0.002, 0.001, design="welch")
    assert w["n"] > n  # two noisy sides need more runs than one fixed value
    fixed_old = seeds_needed(0.002, 0.001, design="welch", old_n=3)
    assert fixed_old["n"] is None or fixed_old["n"] >= w["n"]
    runner = CliRunner()
    out = runner.invoke(main, ["seeds-needed", "--delta", "0.004", "--std", "0.0007",
                               "--margin-bpb", "0.00296", "--json"])
    assert out.exit_code == 0
    doc = json.loads(out.stdout)
    assert doc["delta"] == pytest.approx(0.004 - 0.00296) and doc["n"] >= 2
    assert runner.invoke(main, ["seeds-needed", "--delta", "0.001", "--std", "0.001",
                                "--margin-bpb", "0.002"]).exit_code == 2
    human = runner.invoke(main, ["seeds-needed", "--delta", "0.003", "--std", "0.001"])
    assert human.exit_code == 0 and "runs reach power" in human.stdout


def test_plot_is_a_png_and_not_overwritten(shared_records, tmp_path):
    runner = CliRunner()
    png = tmp_path / "sig.png"
    args = ["significance", str(shared_records.joinpath(*LONG)), "--sota", "1.2244,1.2250,1.2239",
            "--plot", str(png)]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    again = runner.invoke(main, args)
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(main, args + ["--force"]).exit_code == 0
