"""Claim verification: classifications of the shared record folders (several claims are the
best run, not the mean), flags for broken limits, and the logs/verify CLIs (exit codes, JSON,
no torch at start-up)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from golfeval.cli import main
from golfeval.records.folders import read_folder, read_tree
from golfeval.records.verify import classify_claim, mean_std, verify_record

# Claim classification of every shared folder, worked out by hand from its logs.
EXPECTED = {
    "2026-03-17_LoRA_TTT": ("single-run", 4),  # v3's score; v2 is better; mean is 1.1928
    "2026-03-17_NaiveBaseline": ("single-run", 1),
    "2026-03-18_LongContextSeq2048": ("best-run", 3),
    "2026-03-19_MixedQuant_Int6Int8_SlidingWindow": ("single-run", 3),  # 3 runs, 3 configs
    "2026-03-19_SlidingWindowEval": ("single-run", 1),
    "2026-03-20_10L_Int5MLP_MuonWD04_SWA50": ("mean", 3),
    "2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233": ("best-run", 3),
    "2026-03-23_LeakyReLU_LegalTTT_ParallelMuon": ("mean", 3),
    "2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon": ("best-run", 3),
    "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2": ("mean", 5),
    "2026-04-10_VarLenAttn": ("mean", 3),
    "2026-04-14_MultiPhaseGlobalSGD_PhasedTTT": ("mean", 3),
    "2026-04-18_PR1626_CaseOps_Taper": ("mean", 3),
    "2026-03-29_HNet_ByteVsSubword_Study": ("single-run", 3),
    "2026-04-05_118M_XNOR-Net_FP8_1024D_10L": ("unsupported", 7),  # no submission.json
}


@pytest.fixture(scope="module")
def verified(shared_records):
    return {rec.name: verify_record(rec) for rec in read_tree(shared_records)}


def codes(v, severity=None):
    return {f["code"] for f in v.flags if severity is None or f["severity"] == severity}


def test_shared_classifications(verified):
    got = {name: (v.classification, v.n) for name, v in verified.items()}
    assert got == EXPECTED


def test_shared_details_and_flags(verified):
    long = verified["2026-03-18_LongContextSeq2048"]
    assert long.support[0].name == "train.log" and long.ok
    assert long.mean == pytest.approx(1.2063662267, abs=1e-10)
    assert long.std == pytest.approx(7.16669e-4, abs=1e-8)
    ema = verified["2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233"]
    assert ema.mean == pytest.approx(1.1233164133, abs=1e-9) and "duplicates" in codes(ema)
    base = verified["2026-03-17_NaiveBaseline"]
    assert {"val_bytes", "few_runs"} <= codes(base, "warning") and base.ok  # 155.8 M export
    assert "val_bytes" not in codes(verified["2026-04-18_PR1626_CaseOps_Taper"])
    lora = verified["2026-03-17_LoRA_TTT"]
    assert "train_time" in codes(lora, "warning")  # v1 trained 2400 s, but is not the claim
    assert lora.support[0].name == "train_v3.txt" and lora.ok
    hnet = verified["2026-03-29_HNet_ByteVsSubword_Study"]
    assert "train_time" in codes(hnet, "info") and hnet.ok  # non-record track: 4 h allowed
    xnor = verified["2026-04-05_118M_XNOR-Net_FP8_1024D_10L"]
    assert "no_claim" in codes(xnor, "error") and not xnor.ok
    assert "no_final_metric" in codes(xnor, "info")
    swa = verified["2026-03-20_10L_Int5MLP_MuonWD04_SWA50"]
    assert "claim_field" in codes(swa)
    caseops = verified["2026-04-18_PR1626_CaseOps_Taper"]
    assert "seed_conflict" in codes(caseops) and caseops.mean == pytest.approx(1.06780094)
    for name, v in verified.items():
        if v.classification != "unsupported":
            assert not codes(v, "error"), name


def _run(name, seed, bpb, loss=2.0, total=15_000_000, ms=590_000.0, label="final_sliding"):
    from golfeval.records.folders import Run
    from golfeval.records.parse import RunLog

    log = RunLog(val_bpb=bpb, val_loss=loss, label=label, kind="sliding", total_bytes=total,
                 train_time_ms=ms, decimals=8, val_tokens=62021632, tokenizer="sp.model")
    return Run(name, name, seed, "name", None, "run", log)


def test_classify_claim_cases():
    runs = [_run("a", 1, 1.100), _run("b", 2, 1.102), _run("c", 3, 1.104), _run("d", 4, 1.130)]
    assert classify_claim(mean_std([1.1, 1.102, 1.104, 1.13])[0], runs).classification == "mean"
    best3 = classify_claim(1.102, runs)
    assert best3.classification == "mean" and best3.subset_flag["severity"] == "warning"
    assert "best 3 of 4" in best3.detail
    assert classify_claim(1.10002, runs).classification == "best-run"
    assert classify_claim(1.13, runs).classification == "single-run"
    assert classify_claim(1.2, runs).classification == "unsupported"
    assert classify_claim(None, runs).classification == "unsupported"
    listed = classify_claim(1.103, runs, listed_seeds=[2, 3])
    assert listed.classification == "mean" and "listed" in listed.detail


def _folder(tmp_path, claim, specs, ratio=1.688421):
    for i, (bpb, total, ms) in enumerate(specs):
        (tmp_path / f"train_seed{i}.log").write_text(
            f"seed:{i}\nval_loader:shards pattern=x tokens:62021632\n"
            f"step:100/100 train_loss:2.0 train_time:{ms}ms step_avg:{ms / 100:.2f}ms\n"
            f"Total submission size int6+zstd: {total} bytes\n"
            f"final_sliding_window_exact val_loss:{bpb * ratio:.8f} val_bpb:{bpb:.8f}\n")
    (tmp_path / "submission.json").write_text(json.dumps({"val_bpb": claim}))
    return read_folder(tmp_path)


def test_hard_limits_fail(tmp_path):
    (tmp_path / "a").mkdir()
    v = verify_record(_folder(tmp_path / "a", 1.1, [(1.1, 16_000_001, 590000)]))
    assert v.classification == "single-run" and "over_budget" in codes(v, "error") and not v.ok
    (tmp_path / "b").mkdir()
    v = verify_record(_folder(tmp_path / "b", 1.1, [(1.1, 15_000_000, 700000)] * 3))
    assert "train_time" in codes(v, "error") and not v.ok
    (tmp_path / "c").mkdir()
    v = verify_record(_folder(tmp_path / "c", 1.0, [(1.1, 15e6, 590000), (1.2, 15e6, 590000)]))
    assert v.classification == "unsupported" and "unsupported" in codes(v, "error")
    assert verify_record(read_folder(tmp_path / "c"), claim=1.15).classification == "mean"


def test_implied_val_bytes_flag(tmp_path):
    # loss/bpb = 1.688421 over 62,021,632 tokens implies 151,077,000 bytes: fine.
    (tmp_path / "a").mkdir()
    v = verify_record(_folder(tmp_path / "a", 1.1, [(1.1, 15e6, 590000)] * 3))
    assert "val_bytes" not in codes(v) and v.ok and v.classification == "mean"
    (tmp_path / "b").mkdir()  # 20% more bytes than the split has: a byte-accounting bug
    v = verify_record(_folder(tmp_path / "b", 1.1, [(1.1, 15e6, 590000)] * 3, ratio=2.0261))
    assert "val_bytes" in codes(v, "warning") and "+20.0" in str(v.flags)


def test_verify_cli_exit_codes_and_json(shared_records, tmp_path):
    runner = CliRunner()
    ok = shared_records / "track_10min_16mb" / "2026-03-18_LongContextSeq2048"
    res = runner.invoke(main, ["verify", str(ok), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["classification"] == "best-run" and doc["claim"] == 1.20576485 and doc["n"] == 3
    assert {"file", "seed", "val_loss", "val_bpb", "label", "kind"} <= set(doc["runs"][0])
    assert set(doc) >= {"claim", "classification", "runs", "n", "mean", "std", "flags"}
    human = runner.invoke(main, ["verify", str(ok)])
    assert human.exit_code == 0 and "best-run" in human.output and "train_seed1338.log" in \
        human.output and human.output.rstrip().endswith("OK")
    bad = shared_records / "track_non_record_16mb" / "2026-04-05_118M_XNOR-Net_FP8_1024D_10L"
    res = runner.invoke(main, ["verify", str(bad)])
    assert res.exit_code == 1 and "FAIL" in res.output
    res = runner.invoke(main, ["verify", str(bad), "--claim", "1.5561", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["classification"] == "best-run"
    res = runner.invoke(main, ["verify", str(shared_records), "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert len(doc["records"]) == 15 and doc["failed"] == ["2026-04-05_118M_XNOR-Net_FP8_1024D_10L"]
    res = runner.invoke(main, ["verify", str(tmp_path / "missing")])
    assert res.exit_code == 2 and res.output.startswith("error:")


def test_logs_cli(shared_records):
    runner = CliRunner()
    res = runner.invoke(main, ["logs", str(shared_records), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    s = doc["summary"]
    assert (s["folders"], s["ambiguous"], s["no_final_metric"], s["problems"]) == (15, 0, 2, 0)
    assert s["duplicates"] == 2 and s["scored"] == s["runs"] - 2
    run = doc["folders"][0]["runs"][0]
    assert "config" not in run and {"metrics", "seed", "val_bpb", "kind"} <= set(run)
    one = shared_records / T10 / "2026-03-19_SlidingWindowEval" / "train.log"
    res = runner.invoke(main, ["logs", str(one)])
    assert res.exit_code == 0 and "1.19250007" in res.output and "sliding" in res.output
    res = runner.invoke(main, ["logs", str(one), "--json", "--config"])
    assert json.loads(res.stdout)["folders"][0]["runs"][0]["config"]["train_shards"] == "80"


T10 = "track_10min_16mb"


def test_logs_and_verify_do_not_import_torch_or_scipy():
    code = ("import sys, golfeval.cli, golfeval.cli.logs, golfeval.records.folders, "
            "golfeval.records.verify; "
            "print(sorted(m for m in ('torch', 'scipy', 'numpy', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_disclosed_runs_and_cherry_picked_subset(tmp_path):
    rec = _folder(tmp_path, 1.101, [(b, 15e6, 590000) for b in (1.100, 1.102, 1.104, 1.120)])
    rec.submission.all_runs = {i: {"val_bpb": None} for i in range(4)}
    v = verify_record(rec)
    assert v.classification == "mean" and "best 2 of 4" in v.detail
    assert {"claim_subset", "disclosed_runs"} <= codes(v)


def test_claim_in_nats_and_json_without_nan(tmp_path):
    rec = _folder(tmp_path, 1.1, [(b, 15e6, 590000) for b in (1.100, 1.102, 1.104)])
    rec.submission.claim_bpb = round(1.102 * 1.688421, 8)  # a val_loss mean given alone
    rec.submission.claim_field = "val_loss"
    v = verify_record(rec)
    assert v.classification == "mean" and "claim_units" in codes(v, "warning")
    (tmp_path / "train_seed9.log").write_text(
        "seed:9\nfinal_int8_zlib_roundtrip val_loss:nan val_bpb:nan\n")
    res = CliRunner().invoke(main, ["logs", str(tmp_path), "--json"])
    doc = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"invalid JSON {c}"))
    (run,) = [r for r in doc["folders"][0]["runs"] if r["seed"] == 9]
    assert run["status"] == "no_final_metric" and run["metrics"][0]["val_bpb"] is None
    assert "non-finite" in run["reason"]
