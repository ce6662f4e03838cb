"""Record folders: every shared folder parses, per-run values match the files (read by hand),
identical logs count once, and submission.json is understood in all its variants."""

from __future__ import annotations

import json

import pytest

from golfeval.records.folders import (
    find_record_folders,
    load_submission,
    read_folder,
    read_log_file,
    read_tree,
)
from golfeval.records.submission import parse_submission

T10 = "track_10min_16mb"
NR = "track_non_record_16mb"


@pytest.fixture(scope="module")
def shared(shared_records):
    return {f.name: f for f in read_tree(shared_records)}


def runs_of(rec):
    return {r.name: r for r in rec.runs}


def test_every_shared_folder_parses_without_unexplained_failure(shared, shared_records):
    assert len(shared) == len(find_record_folders(shared_records)) >= 15
    for rec in shared.values():
        assert rec.problems == [], (rec.name, rec.problems)
        assert any(r.log.status == "ok" for r in rec.runs), rec.name
        for r in rec.runs:
            assert r.log.status in ("ok", "ambiguous", "no_final_metric")
            if r.log.status != "ok":
                assert r.log.reason, (rec.name, r.name)
            else:
                assert r.log.val_bpb and r.log.label and r.log.kind, (rec.name, r.name)


# (folder, run) -> seed, label, kind, val_loss, val_bpb, train ms, steps, total bytes, tag,
# code bytes, val tokens — copied by hand from the log files.
HAND = {
    ("2026-03-17_NaiveBaseline", "train.log"): (
        1337, "final_int8_zlib_roundtrip_exact", "flat", 2.07269931, 1.22436570, 600038, 13780,
        15863489, "int8+zlib", 47642, 63779840),
    ("2026-03-18_LongContextSeq2048", "train_seed1339.log"): (
        1339, "final_int8_zlib_roundtrip_exact", "flat", 2.03823779, 1.20715923, 600051, 11578,
        15861752, "int8+zlib", 47716, 62021632),
    ("2026-03-19_SlidingWindowEval", "train.log"): (
        1337, "final_int8_zlib_roundtrip_exact", "sliding", 2.01348383, 1.19250007, 600028,
        13450, 15874829, "int8+zlib", 58340, 62021632),
    ("2026-03-19_MixedQuant_Int6Int8_SlidingWindow", "train.log#2"): (
        1337, "final_sliding_window_eval_exact", "sliding", 2.04033873, 1.20840424, 600039,
        12386, 15220600, "int6+zlib-9", 55932, 62021632),
    ("2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233", "train_seed42.log"): (
        42, "final_int6_sliding_window_exact", "sliding", 1.89715168, 1.12360306, 600059, 7103,
        15540675, "int6+zstd", 67603, 62021632),
    ("2026-03-23_LeakyReLU_LegalTTT_ParallelMuon", "train_seed2025.log"): (
        2025, "legal_ttt_exact", "ttt", 1.88919190, 1.11888882, 600110, 7193, 15990006,
        "int6+lzma", 89458, 62021632),
    ("2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon", "ternary_log_7.txt"): (
        7, "final_sliding", "sliding", 2.9901, 1.1578, 599602, 6530, 15992753, None, 70853,
        None),
    ("2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2", "train_seed1234.log"): (
        1234, "quantized_sliding_window", "sliding", 2.80170263, 1.08462640, 588024, 4989,
        15983318, "quantized+brotli", 15516, 40540160),
    ("2026-04-10_VarLenAttn", "logs/train0.txt"): (
        0, "quantized_ttt_lora", "ttt", 2.77059090, 1.07258208, 587193, 4867, 15996664,
        "quantized+brotli", 27310, 40540160),
    ("2026-04-18_PR1626_CaseOps_Taper", "train_seed0.log"): (
        0, "quantized_ttt_phased", "ttt", 2.33730724, 1.06805820, 596107, 4921, 15932307,
        "quantized+brotli", 28320, 47851520),
    ("2026-03-17_LoRA_TTT", "train_v2.txt"): (
        1337, "final_int8_ttt_lora", "ttt", 2.0128, 1.1921, 600047, 13782, 15866451,
        "int8+zlib", 58465, 62021632),
    ("2026-03-29_HNet_ByteVsSubword_Study", "train_byte260_4h.log"): (
        1337, "final_int8_zlib_roundtrip_exact", "flat", 0.94198807, 1.35945128, 14399952,
        85242, 15962226, "int8+zlib", 57968, 151130112),
    ("2026-04-05_118M_XNOR-Net_FP8_1024D_10L", "log_10mins_seed-7.txt"): (
        7, "final_sliding", "sliding", 2.8350, 1.5799, 599224, 15500, 15964152, "brotli", 78442,
        None),
}


@pytest.mark.parametrize("folder,run", sorted(HAND))
def test_run_values_match_the_files(shared, folder, run):
    r = runs_of(shared[folder])[run]
    seed, label, kind, loss, bpb, ms, steps, total, tag, code, tokens = HAND[folder, run]
    log = r.log
    assert (r.seed, log.label, log.kind) == (seed, label, kind)
    assert (log.val_loss, log.val_bpb) == (loss, bpb)
    assert (log.train_time_ms, log.steps, log.total_bytes) == (ms, steps, total)
    assert (log.compressor, log.code_bytes, log.val_tokens) == (tag, code, tokens)


def test_folder_shapes(shared):
    mixed = shared["2026-03-19_MixedQuant_Int6Int8_SlidingWindow"]
    assert sorted(runs_of(mixed)) == ["train.log#1", "train.log#2", "train.log#3"]
    ema = shared["2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233"]
    assert sorted(runs_of(ema)) == ["train_seed1337.log", "train_seed2024.log",
                                    "train_seed42.log"]
    assert ema.duplicates == [{"file": "train.log", "same_as": "train_seed1337.log",
                               "why": "identical file"}]
    hnet = shared["2026-03-29_HNet_ByteVsSubword_Study"]
    assert [d["file"] for d in hnet.duplicates] == ["train_byte260_best_10_min.log#2"]
    assert runs_of(hnet)["train_sp1024_best_10_min.log"].log.tokenizer_id == \
        "fineweb_1024_bpe.model"
    assert runs_of(hnet)["train_byte260_4h.log"].log.tokenizer_id == "byte260"
    xnor = runs_of(shared["2026-04-05_118M_XNOR-Net_FP8_1024D_10L"])
    assert xnor["log_eggroll_all-layers-perturbed.txt"].log.status == "no_final_metric"
    assert "16/100" in xnor["log_eggroll_all-layers-perturbed.txt"].log.reason
    assert xnor["log_eggroll_lora.txt"].log.kind == "flat"
    caseops = runs_of(shared["2026-04-18_PR1626_CaseOps_Taper"])["train_seed0.log"]
    assert caseops.seed == 0 and caseops.log.echo_seed == 1337  # the name wins, noted
    assert any("seed 1337" in n for n in caseops.log.notes)
    lora = runs_of(shared["2026-03-17_LoRA_TTT"])["train_v1.txt"]
    assert (lora.seed, lora.variant, lora.seed_source) == (1337, "v1", "echo")


def test_submission_variants_of_shared_folders(shared):
    sp = shared["2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2"].submission
    assert sp.claim_bpb == 1.08563 and sp.seeds == [1, 42, 1234, 1337, 2025]
    assert sp.seed_results[1234]["val_bpb"] == 1.08463 and sp.std == 0.0007
    assert sp.track == "record"
    swa = shared["2026-03-20_10L_Int5MLP_MuonWD04_SWA50"].submission
    assert (swa.claim_bpb, swa.claim_field, swa.claim_loss) == (1.14276, "val_loss", None)
    ternary = shared["2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon"].submission
    assert ternary.path.endswith("submission_ternary.json") and ternary.claim_bpb == 1.1565
    hnet = shared["2026-03-29_HNet_ByteVsSubword_Study"]
    assert hnet.track == "non-record" and hnet.submission.claim_bpb == 1.35945128
    assert shared["2026-04-05_118M_XNOR-Net_FP8_1024D_10L"].submission is None


def test_submission_variants_synthetic():
    s = parse_submission({"mean_val_bpb": "1.0812", "mean_val_loss": 2.79,
                          "seeds": {"42": {"val_bpb": 1.081, "val_loss": 2.78},
                                    "7": {"val_bpb": 1.0814}},
                          "p_value": "<0.001", "t_statistic": 9.1, "welch_df": 3.7,
                          "track": "track_10min_16mb",
                          "seed_results_all_runs_disclosure": {"1": 1.09, "2": 1.085}})
    assert (s.claim_bpb, s.claim_field, s.claim_loss) == (1.0812, "mean_val_bpb", 2.79)
    assert s.seed_results[42]["val_loss"] == 2.78 and sorted(s.seeds) == [7, 42]
    assert s.p_value == "<0.001" and (s.t_statistic, s.welch_df) == (9.1, 3.7)
    assert s.all_runs == {1: {"val_bpb": 1.09, "val_loss": None, "artifact_bytes": None},
                          2: {"val_bpb": 1.085, "val_loss": None, "artifact_bytes": None}}
    s = parse_submission({"val_bpb": 1.1, "seed_scores": [1.09, 1.1, 1.11],
                          "track": "non-record-unlimited-compute-16mb"})
    assert s.seed_scores == [1.09, 1.1, 1.11] and s.track == "non-record"
    s = parse_submission({"val_bpb": 1.1, "seed_results": [{"seed": 3, "val_bpb": 1.1}]})
    assert s.seed_results == {3: {"val_bpb": 1.1, "val_loss": None, "artifact_bytes": None}}
    s = parse_submission({"name": "x"})
    assert s.claim_bpb is None and s.problems


def test_unreadable_submission_is_a_problem_not_a_crash(tmp_path):
    (tmp_path / "submission.json").write_text("{not json")
    sub = load_submission(tmp_path)
    assert sub.claim_bpb is None and "unreadable" in sub.problems[0]
    rec = read_folder(tmp_path)
    assert any("unreadable" in p for p in rec.problems)


LOG = ("seed:{seed}\nstep:100/100 train_loss:2.0 train_time:500000ms step_avg:5000.00ms\n"
       "Total submission size int8+zlib: 15000000 bytes\n"
       "final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}\n")


def test_identical_files_count_once_and_layout(tmp_path):
    rec_dir = tmp_path / "track_10min_16mb" / "2026-05-01_Test"
    (rec_dir / "logs").mkdir(parents=True)
    text = LOG.format(seed=1, loss=2.0, bpb=1.2)
    (rec_dir / "train.log").write_text(text)
    (rec_dir / "train_seed1.log").write_text(text)
    (rec_dir / "logs" / "train_seed2.log").write_text(LOG.format(seed=2, loss=2.01, bpb=1.21))
    (rec_dir / "requirements.txt").write_text("torch\n")
    (rec_dir / "submission.json").write_text(json.dumps({"val_bpb": 1.205}))
    assert find_record_folders(tmp_path) == [rec_dir]
    rec = read_folder(rec_dir)
    assert [r.name for r in rec.runs] == ["logs/train_seed2.log", "train_seed1.log"]
    assert rec.duplicates[0]["file"] == "train.log"
    assert rec.skipped == [{"file": "requirements.txt", "reason": "not a training log (by name)"}]
    assert rec.track == "record"
    single = read_log_file(rec_dir / "train.log")
    assert [r.name for r in single.runs] == ["train.log"] and single.submission is None


def test_eval_only_rerun_replaces_the_original(tmp_path):
    (tmp_path / "train_seed1.log").write_text(LOG.format(seed=1, loss=2.0, bpb=1.2))
    (tmp_path / "train_seed1_rerun.log").write_text(
        "seed:1\nfinal_int8_zlib_roundtrip_exact val_loss:1.99000000 val_bpb:1.19000000\n")
    rec = read_folder(tmp_path)
    primary = rec.primary_runs()
    assert [r.name for r in primary] == ["train_seed1_rerun.log"]
    assert primary[0].log.eval_only
    assert [r.superseded_by for r in rec.runs if r.name == "train_seed1.log"] == [
        "train_seed1_rerun.log"]
    from golfeval.records.verify import verify_record

    v = verify_record(rec, claim=1.19).to_dict()
    assert v["n"] == 1 and len(v["runs"]) == 2  # every run listed, the replaced one not counted
    assert {r["run"]: r["counted"] for r in v["runs"]} == {
        "train_seed1.log": False, "train_seed1_rerun.log": True}


def test_stray_log_above_record_folders_does_not_swallow_them(tmp_path):
    track = tmp_path / "track_10min_16mb"
    for name in ("A", "B"):
        (track / name).mkdir(parents=True)
        (track / name / "submission.json").write_text('{"val_bpb": 1.2}')
        (track / name / "train_seed1.log").write_text(LOG.format(seed=1, loss=2.0, bpb=1.2))
    (track / "leaderboard.txt").write_text("A 1.2\nB 1.2\n")
    (tmp_path / "C" / "logs").mkdir(parents=True)  # no submission.json: logs/ belongs to C
    (tmp_path / "C" / "train.log").write_text(LOG.format(seed=3, loss=2.0, bpb=1.2))
    (tmp_path / "C" / "logs" / "train_seed4.log").write_text(LOG.format(seed=4, loss=2.0, bpb=1.2))
    assert find_record_folders(tmp_path) == [tmp_path / "C", track / "A", track / "B"]
    assert [r.seed for r in read_folder(tmp_path / "C").runs] == [4, 3]
