"""Parser robustness on synthetic logs of shapes that broke real reviews: a failed TTT
attempt's `:done` line before the run's `final_…_exact` line, two final lines that
disagree, a non-record log that prints its score in its own words, and the sign of t."""

from __future__ import annotations

import pytest

from golfeval.records.folders import read_folder
from golfeval.records.parse import parse_text
from golfeval.records.select import label_class
from golfeval.records.significance import T_CONVENTION, one_sample, welch
from golfeval.records.verify import verify_record

HEAD = """\
seed:42
val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=/d/fineweb_1024_bpe.model
val_loader:shards pattern=/d/fineweb_val_*.bin tokens:62021632
step:0/9000 val_loss:6.9357 val_bpb:4.1077 train_time:0ms step_avg:0.01ms
step:7000/9000 val_loss:1.9500 val_bpb:1.1550 train_time:599000ms step_avg:85.57ms
stopping_early: wallclock_cap train_time:600100ms step:7010/9000
Serialized model int6+lzma: 15787052 bytes
Code size: 89458 bytes
Total submission size int6+lzma: 15876510 bytes
"""

FAILED_TTT = HEAD + """\
final_int6_sliding_window val_loss:1.8956 val_bpb:1.1227 stride:64 eval_time:97749ms
ttt_sliding:start chunks=1893 chunk_tokens=32768
ttt_sliding:done val_loss=1.951102 val_bpb=1.155520 elapsed=407.5s
final_int6_sliding_window_exact val_loss:1.89556781 val_bpb:1.12266500
"""


def one(text):
    runs = parse_text(text)
    assert len(runs) == 1
    return runs[0]


def test_label_classes():
    assert label_class("ttt_sliding:done") == "intermediate"
    assert label_class("ttt_progress") == "intermediate"
    for lab in ("final_int6_sliding_window_exact", "legal_ttt_exact", "quantized_ttt_phased",
                "final_sliding", "quantized"):
        assert label_class(lab) == "final", lab


def test_failed_ttt_done_line_never_beats_the_final_exact_line():
    log = one(FAILED_TTT)
    assert log.status == "ok"
    assert (log.label, log.val_bpb, log.kind) == ("final_int6_sliding_window_exact",
                                                  1.122665, "sliding")
    assert any("ttt_sliding:done" in n and "intermediate" in n for n in log.notes)


def test_same_shape_after_the_final_line_and_without_val_loss():
    text = HEAD + ("final_int6_sliding_window_exact val_loss:1.89556781 val_bpb:1.12266500\n"
                   "ttt_sliding:done val_bpb=1.155520 elapsed=407.5s\n")
    log = one(text)
    assert (log.label, log.val_bpb) == ("final_int6_sliding_window_exact", 1.122665)


def test_a_done_line_that_is_the_score_still_counts():
    # the legal TTT shape: the :done line and its final summary print the same score
    text = HEAD + ("ttt_sliding:done val_loss=1.891102 val_bpb=1.120020 elapsed=407.5s\n"
                   "legal_ttt val_loss:1.8911 val_bpb:1.1200 eval_time:408049ms\n"
                   "legal_ttt_exact val_loss:1.89110239 val_bpb:1.12002032\n")
    log = one(text)
    assert (log.label, log.kind, log.val_bpb) == ("legal_ttt_exact", "ttt", 1.12002032)


def test_only_intermediate_lines_are_used_when_nothing_final_is_printed():
    log = one(HEAD + "ttt_sliding:done val_loss=1.891102 val_bpb=1.120020 elapsed=407.5s\n")
    assert (log.status, log.val_bpb, log.kind) == ("ok", 1.12002, "ttt")


def test_two_final_lines_of_the_same_rank_that_disagree_are_ambiguous():
    text = HEAD + ("final_int6_sliding_window_exact val_loss:1.89556781 val_bpb:1.12266500\n"
                   "final_sliding_window_eval_exact stride:64 val_loss:1.90000000 "
                   "val_bpb:1.12530000\n")
    log = one(text)
    assert log.status == "ambiguous" and log.val_bpb is None
    cands = {c["label"] for c in log.ambiguity[0]["candidates"]}
    assert cands == {"final_int6_sliding_window_exact", "final_sliding_window_eval_exact"}


def test_the_record_shape_is_supported_end_to_end(tmp_path):
    (tmp_path / "submission.json").write_text('{"val_bpb": 1.12266500, "track": "10min"}')
    for s in (1, 2, 3):
        (tmp_path / f"train_seed{s}.log").write_text(FAILED_TTT.replace("seed:42", f"seed:{s}"))
    v = verify_record(read_folder(tmp_path))
    # identical scores: n counts all three, the claim is their mean
    assert v.classification == "mean" and v.ok, v.to_dict()


OWN_WORDS = """\
config: model=hnet bytes=raw seed=7
it 100 loss 3.2100
it 200 loss 2.9000
Final evaluation: test bpb = 1.4123 (full validation split)
"""


def test_own_words_final_metric_gives_no_final_score_with_the_closest_line():
    log = one(OWN_WORDS)
    assert log.status == "no_final_metric" and log.val_bpb is None
    assert log.closest == {"line": 4, "text": "Final evaluation: test bpb = 1.4123 (full "
                                              "validation split)"}
    assert log.reason.startswith("no final score; closest line 4: Final evaluation")


def test_own_words_folder_yields_a_run_not_nothing(tmp_path):
    (tmp_path / "train.log").write_text(OWN_WORDS)
    rec = read_folder(tmp_path)
    assert len(rec.runs) == 1 and not rec.skipped
    v = verify_record(rec, claim=1.4123)
    assert v.classification == "unsupported"
    assert any(f["code"] == "no_final_metric" and "closest line 4" in f["message"]
               for f in v.flags)


def test_no_final_line_after_training_points_at_the_last_training_eval():
    text = HEAD.split("stopping_early")[0]
    log = one(text)
    assert log.status == "no_final_metric"
    assert log.closest["line"] == 5 and "val_bpb:1.1550" in log.closest["text"]


def test_every_final_shape_of_the_non_record_logs(shared_records):
    """The shapes the non-record track prints: roundtrip (+ _exact), xnor roundtrip,
    final_sliding with (stride=, T=) and time:; runs without one name their closest line."""
    from golfeval.records.folders import read_tree

    shapes, missing = set(), []
    for rec in read_tree(shared_records / "track_non_record_16mb"):
        for r in rec.runs:
            if r.log.label:
                shapes.add(r.log.label)
            else:
                missing.append(r)
    assert shapes == {"final_int8_zlib_roundtrip_exact", "final_sliding",
                      "final_xnor_roundtrip"}
    assert missing and all(r.log.closest and "val_bpb" in r.log.closest["text"]
                           for r in missing)


def test_t_has_the_maintainers_sign_and_p_is_unchanged():
    from scipy import stats

    new, old = [1.100, 1.102, 1.101], [1.120, 1.121, 1.119]
    res = welch(new, old)
    ref = stats.ttest_ind(new, old, equal_var=False, alternative="less")
    assert res["t"] < 0 and res["t"] == pytest.approx(ref.statistic)
    assert res["p"] == pytest.approx(ref.pvalue)
    one = one_sample(new, 1.12)
    assert one["t"] < 0 and one["p"] < 0.01
    assert "negative when NEW is better" in T_CONVENTION


@pytest.mark.parametrize("line,seconds", [
    ("GPTQ:collected 67 Hessians in 3.4s", 3.4),
    ("gptq calibration: 128 batches, 45.2s", 45.2),
    ("calibration done (812ms)", 0.812),
    ("Hessian collection took 12 s", 12.0),
])
def test_calibration_after_the_clock_is_timed(line, seconds):
    log = one(HEAD + line + "\n" + FAILED_TTT[len(HEAD):])
    assert [w["seconds"] for w in log.post_clock] == [pytest.approx(seconds)]


def test_calibration_reserve_and_eval_totals():
    text = HEAD.replace("seed:42\n", "seed:42\ngptq:reserving 4s, effective=596000ms\n") + \
        "ttt_lora:compile warmup done (85.8s)\ntotal_eval_time:332.1s\n" + FAILED_TTT[len(HEAD):]
    log = one(text)
    assert log.calib_reserve_s == 4.0 and log.total_eval_s == 332.1
    assert log.eval_extra == [{"what": "TTT compile warm-up", "line": 11, "seconds": 85.8,
                               "counted": False}]
