"""Line-level log parsing on synthetic lines: every format, alias and pitfall of
docs/log-formats (including those no shared record shows), and ambiguity reported, not guessed."""

from __future__ import annotations

import pytest

from golfeval.records.folders import seed_from_name
from golfeval.records.parse import parse_text
from golfeval.records.select import label_kind

TRAINER_LOG = """\
seed:1234
val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=/data/tok/fineweb_1024_bpe.model
val_loader:shards pattern=/data/fineweb_val_*.bin tokens:62021632
model_params:17059912
step:0/2000 val_loss:6.9357 val_bpb:4.1077 train_time:0ms step_avg:0.01ms
step:100/2000 train_loss:3.1000 train_time:5000ms step_avg:50.00ms
step:200/2000 train_loss:2.9000 train_time:10000ms step_avg:50.00ms
step:200/2000 val_loss:2.9500 val_bpb:1.7471 train_time:10010ms step_avg:50.05ms
stopping_early: wallclock_cap train_time:600020ms step:11999/2000
Serialized model: 67224983 bytes
Code size: 47642 bytes
Total submission size: 67272625 bytes
Serialized model int6+zstd: 15000000 bytes
Code size: 47642 bytes
Total submission size int6+zstd: 15047642 bytes
final_int6_zstd_roundtrip val_loss:2.0727 val_bpb:1.2276 eval_time:1401ms
final_int6_zstd_roundtrip_exact val_loss:2.07269931 val_bpb:1.22756570
final_sliding_window val_loss:2.0201 val_bpb:1.1964 stride:64 eval_time:70000ms
final_sliding_window_exact val_loss:2.02012345 val_bpb:1.19643210
"""


def one(text: str):
    runs = parse_text(text)
    assert len(runs) == 1, [r.to_dict() for r in runs]
    return runs[0]


def test_trainer_log_parses_every_field():
    r = one(TRAINER_LOG)
    assert r.status == "ok" and r.echo_seed == 1234
    assert (r.label, r.kind) == ("final_sliding_window_exact", "sliding")
    assert (r.val_loss, r.val_bpb) == (2.02012345, 1.19643210)
    assert (r.train_time_ms, r.steps, r.planned_steps) == (600020.0, 11999, 2000)
    assert (r.total_bytes, r.compressor, r.code_bytes, r.model_bytes) == (
        15047642, "int6+zstd", 47642, 15000000)
    assert r.val_tokens == 62021632 and r.tokenizer_id == "fineweb_1024_bpe.model"
    assert r.model_params == 17059912 and r.step_avg_ms == 50.05
    assert r.last_progress_bpb == 1.7471
    flat = [m for m in r.metrics if m.label == "final_int6_zstd_roundtrip_exact"][0]
    assert flat.kind == "flat"
    exact = [m for m in r.metrics if m.label == "final_sliding_window_exact"][0]
    assert exact.eval_time_ms == 70000.0 and exact.stride == 64  # shared from the plain line


def test_unix_timestamp_prefixes_are_stripped():
    text = "\n".join(f"1711234567.{i:03d} {line}" for i, line in
                     enumerate(TRAINER_LOG.splitlines()))
    r = one(text)
    assert r.val_bpb == 1.19643210 and r.echo_seed == 1234 and r.steps == 11999


def test_bracketed_timestamps_and_equals_separators():
    text = ("[1711234567] seed=7\n[1711234568] step:10/10 train_loss=2.0 train_time=600ms\n"
            "[1711234569] final_roundtrip val_loss=2.5 val_bpb=1.5\n"
            "[1711234570] final_sliding val_loss: 2.4 val_bpb: 1.4 (stride=16, T=0.90) "
            "eval_time:429311ms\n")
    r = one(text)
    assert (r.label, r.kind, r.val_bpb) == ("final_sliding", "sliding", 1.4)
    m = [m for m in r.metrics if m.label == "final_sliding"][0]
    assert (m.stride, m.temperature, m.eval_time_ms) == (16, 0.9, 429311.0)


def test_echoed_code_is_skipped():
    code = '''"""
Docstring with an example: final_sliding_window_exact val_loss:1.00000000 val_bpb:0.50000000
"""
import os
seed:99
final_int8_zlib_roundtrip val_loss:0.1 val_bpb:0.1
def main():
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{a:.8f} val_bpb:{b:.8f}")
    seed = int(os.environ.get("SEED", 1337))
====================================================================================================
'''
    r = one(code + TRAINER_LOG)
    assert r.val_bpb == 1.19643210 and r.echo_seed == 1234
    assert all(m.val_bpb not in (0.5, 0.1) for m in r.metrics)


def test_unterminated_code_echo_falls_back_to_reading_every_line():
    r = one("import os\nx = 1\n" + TRAINER_LOG)
    assert r.val_bpb == 1.19643210
    assert any("not closed" in n for n in r.notes)


def test_format_string_and_indented_lines_never_count():
    text = ('seed:1\n    final_sliding val_loss:1.0 val_bpb:0.5\n'
            'print(f"final_sliding val_loss:{x} val_bpb:{y}")\n'
            '# final_sliding val_loss:1.0 val_bpb:0.4\n'
            'final_int8_zlib_roundtrip val_loss:2.0 val_bpb:1.2 eval_time:1000ms\n')
    r = one(text)
    assert (r.val_bpb, r.kind) == (1.2, "flat")


@pytest.mark.parametrize("label,kind", [
    ("final_int8_zlib_roundtrip", "flat"), ("final_int8_zlib_roundtrip_exact", "flat"),
    ("final_int6_roundtrip_exact", "flat"), ("final_INT7_zlib_roundtrip", "flat"),
    ("final_ternary_roundtrip", "flat"), ("final_binary_roundtrip", "flat"),
    ("final_xnor_roundtrip", "flat"), ("final_roundtrip", "flat"), ("quantized", "flat"),
    ("final_sliding_window_exact", "sliding"), ("final_sliding_window_eval_exact", "sliding"),
    ("final_int6_sliding_window_exact", "sliding"), ("final_sliding", "sliding"),
    ("quantized_sliding_window", "sliding"), ("legal_ttt", "ttt"), ("legal_ttt_exact", "ttt"),
    ("quantized_ttt", "ttt"), ("final_ttt_lora", "ttt"), ("final_int8_ttt_lora", "ttt"),
    ("quantized_ttt_lora", "ttt"), ("quantized_ttt_phased", "ttt"), ("ttt_sliding:done", "ttt"),
    ("final_temped", "sliding"), ("final_flat_exact", "flat"),
    ("pre-quantization post-ema", "diagnostic"),
    ("DIAGNOSTIC post_ema", "diagnostic"), ("diagnostic pre-quantization post-ema", "diagnostic"),
    ("diagnostic quantized", "diagnostic"),
])
def test_every_documented_label_has_its_kind(label, kind):
    assert label_kind(label) == kind
    r = one(f"seed:1\n{label} val_loss:2.00000000 val_bpb:1.10000000 eval_time:100ms\n")
    if kind == "diagnostic":
        assert r.status == "no_final_metric" and "diagnostic" in r.reason
    else:
        assert (r.label, r.kind, r.val_bpb) == (label, kind, 1.1)


def test_sliding_marker_in_roundtrip_line_and_temperature_stride():
    r = one("final_int8_zlib_roundtrip_exact sliding val_loss:1.9 sliding val_bpb:1.1\n")
    assert (r.kind, r.val_bpb) == ("sliding", 1.1)
    r = one("final_temped val_loss:1.9 val_bpb:1.1 (stride=16, T=1.02)\n")
    assert r.kind == "sliding"


def test_temperature_rerun_beside_sliding_is_ambiguous_not_guessed():
    r = one("final_sliding val_loss:1.9000 val_bpb:1.2100 (stride=16, T=0.90)\n"
            "final_temped val_loss:1.8900 val_bpb:1.2050 T=1.02\n")
    assert r.status == "ambiguous" and r.val_bpb is None
    assert {c["label"] for c in r.ambiguity[0]["candidates"]} == {"final_sliding", "final_temped"}


def test_highest_ranked_kind_wins_and_exact_is_preferred():
    text = ("final_int6_roundtrip val_loss:1.9371 val_bpb:1.1473 eval_time:5814ms\n"
            "final_int6_roundtrip_exact val_loss:1.93712085 val_bpb:1.14727208\n"
            "final_int6_sliding_window val_loss:1.8972 val_bpb:1.1236 stride:64\n"
            "final_int6_sliding_window_exact val_loss:1.89715168 val_bpb:1.12360306\n"
            "final_int8_zlib_roundtrip_exact val_loss:1.89715168 val_bpb:1.12360306\n"
            "ttt_sliding:done val_loss=1.891102 val_bpb=1.120020 elapsed=407.5s\n"
            "legal_ttt val_loss:1.8911 val_bpb:1.1200 eval_time:408049ms\n"
            "legal_ttt_exact val_loss:1.89110239 val_bpb:1.12002032\n")
    r = one(text)
    assert (r.label, r.kind, r.val_bpb, r.val_loss) == ("legal_ttt_exact", "ttt", 1.12002032,
                                                        1.89110239)
    copy = [m for m in r.metrics if m.label == "final_int8_zlib_roundtrip_exact"][0]
    assert "copy of final_int6_sliding_window_exact" in copy.note  # alias 2


def test_alias_reprint_after_sliding_does_not_count_as_flat():
    text = ("final_int6_roundtrip_exact val_loss:1.93712085 val_bpb:1.14727208\n"
            "final_int6_sliding_window_exact val_loss:1.89715168 val_bpb:1.12360306\n"
            "final_int8_zlib_roundtrip_exact val_loss:1.89715168 val_bpb:1.12360306\n")
    r = one(text)
    assert (r.label, r.kind, r.val_bpb) == ("final_int6_sliding_window_exact", "sliding",
                                            1.12360306)
    assert r.ambiguity == []


def test_alias_announced_sliding_roundtrip():
    text = ("step:13450/20000 val_loss:2.0592 val_bpb:1.2196 train_time:600028ms\n"
            "final_eval_mode:sliding_window stride:64 batch_seqs:1024\n"
            "final_int8_zlib_roundtrip val_loss:2.0135 val_bpb:1.1925 eval_time:69881ms\n"
            "final_int8_zlib_roundtrip_exact val_loss:2.01348383 val_bpb:1.19250007\n")
    r = one(text)
    assert (r.kind, r.val_bpb, r.label) == ("sliding", 1.19250007,
                                            "final_int8_zlib_roundtrip_exact")
    assert r.ambiguity == [] and any("sliding" in n for n in r.notes)


def test_alias_unannounced_slow_roundtrip_is_reported_ambiguous_kind():
    text = ("step:13450/20000 val_loss:2.0592 val_bpb:1.2196 train_time:600028ms\n"
            "final_int8_zlib_roundtrip val_loss:2.0135 val_bpb:1.1925 eval_time:69881ms\n"
            "final_int8_zlib_roundtrip_exact val_loss:2.01348383 val_bpb:1.19250007\n")
    r = one(text)
    assert r.val_bpb == 1.19250007 and r.kind is None and r.status == "ok"
    (amb,) = r.ambiguity
    assert amb["field"] == "kind" and amb["candidates"] == ["flat", "sliding"]
    assert "69.9 s" in amb["reason"] and "far below" in amb["reason"]


def test_plain_fast_roundtrip_is_flat_without_doubt():
    text = ("step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms\n"
            "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms\n"
            "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570\n")
    r = one(text)
    assert (r.kind, r.ambiguity) == ("flat", [])


def test_alias_online_ttt_with_zero_eval_time():
    body = "final_int8_zlib_roundtrip val_loss:2.0 val_bpb:1.18 eval_time:0ms\n"
    r = one("ttt_online:enabled lr:0.001\n" + body)
    assert r.kind == "ttt" and "online-TTT" in r.notes[0]
    r = one(body.replace("eval_time:0ms", "eval_mode:online_ttt eval_time:0ms"))
    assert r.kind == "ttt"
    r = one(body)
    assert r.kind is None and r.ambiguity[0]["candidates"] == ["flat", "ttt"]


def test_failed_experiment_line_is_never_the_claim():
    text = ("final_int6_sliding_window_exact val_loss:1.89715168 val_bpb:1.12360306\n"
            "final_int6_ttt val_loss:2.2560 val_bpb:1.3361 eval_time:500000ms\n")
    r = one(text)
    assert r.val_bpb == 1.12360306 and any("failed experiment" in n for n in r.notes)


def test_two_different_top_scores_are_ambiguous_not_guessed():
    text = ("final_sliding_window_exact val_loss:1.90000000 val_bpb:1.12500000\n"
            "final_int6_sliding_window_exact val_loss:1.89000000 val_bpb:1.12000000\n")
    r = one(text)
    assert r.status == "ambiguous" and r.val_bpb is None and r.label is None
    (amb,) = r.ambiguity
    assert amb["field"] == "val_bpb"
    assert sorted(c["val_bpb"] for c in amb["candidates"]) == [1.12, 1.125]


def test_harness_summary_resolves_ambiguity():
    text = ("final_sliding_window_exact val_loss:1.90000000 val_bpb:1.12500000\n"
            "final_int6_sliding_window_exact val_loss:1.89000000 val_bpb:1.12000000\n"
            "---\nval_bpb:          1.12000000\nartifact_bytes:   15540675\n"
            "valid:            true\n")
    r = one(text)
    assert r.status == "ok" and r.val_bpb == 1.12
    assert r.harness == {"val_bpb": 1.12, "decimals": 8, "artifact_bytes": 15540675,
                         "valid": True}


def test_april_format_sizes_and_spaced_separators():
    text = ("Hyperparameters:\n  seed: 42\n  tokenizer_path: ./tok/fineweb_8192_bpe.model\n"
            "  train_seq_len: 2048\nval_tokens: 40540160\n"
            "0/20000 val_loss: 9.0090 val_bpb: 3.4877\n"
            "4000/20000 train_loss: 2.9 train_time: 9.8m tok/s: 8000000\n"
            "4986/20000 val_loss: 2.8178 val_bpb: 1.0909\n"
            "stopping_early: wallclock_cap train_time: 588136ms step: 4986/20000\n"
            "pre-quantization post-ema val_loss:2.81543002 val_bpb:1.08994070 eval_time:6006ms\n"
            "Code size (uncompressed): 121884 bytes\nCode size (compressed): 27310 bytes\n"
            "Serialized model quantized+brotli: 15969354 bytes\n"
            "Total submission size quantized+brotli: 15996664 bytes\n"
            "quantized val_loss:2.85032574 val_bpb:1.10344992 eval_time:7467ms\n"
            "quantized_sliding_window val_loss:2.80691494 val_bpb:1.08664424 eval_time:84115ms\n")
    r = one(text)
    assert (r.echo_seed, r.tokenizer_id, r.val_tokens) == (42, "fineweb_8192_bpe.model", 40540160)
    assert (r.steps, r.planned_steps, r.train_time_ms) == (4986, 20000, 588136.0)
    assert (r.code_bytes, r.total_bytes, r.compressor) == (27310, 15996664, "quantized+brotli")
    assert (r.label, r.val_bpb) == ("quantized_sliding_window", 1.08664424)
    assert r.config["train_seq_len"] == "2048"


def test_ternary_budget_lines_and_long_hyperparameter_echo():
    text = ("--- Hyperparameters ---\nactivation_type=relu2 seed=7 num_layers=10 "
            "tokenizer_path=./t/fineweb_8192_bpe.model train_seq_len=1024\n"
            "step:6530/10000 val_loss:3.0535 val_bpb:1.1823 train_time:599602ms zero_frac:0.3\n"
            "stopping_early: wallclock_cap train_time:599602ms step:6530/10000\n"
            "artifact:15.92MB ternary:64880640(14239486B) fp:2513744(2537376B) code:70853\n"
            "budget:15992753/16000000 (15.99/16.00MB) FITS\n"
            "final_ternary_roundtrip val_loss:3.0604 val_bpb:1.1850\n"
            "final_sliding val_loss:2.9901 val_bpb:1.1578 (stride=16, T=0.90) eval_time:429023ms\n")
    r = one(text)
    assert (r.echo_seed, r.total_bytes, r.code_bytes) == (7, 15992753, 70853)
    assert (r.kind, r.val_bpb, r.tokenizer_id) == ("sliding", 1.1578, "fineweb_8192_bpe.model")
    assert r.config["num_layers"] == "10" and "seed" not in r.config


def test_untagged_total_alone_is_used_with_a_note():
    r = one("Total submission size: 15863489 bytes\nfinal_roundtrip val_loss:2.0 val_bpb:1.2\n")
    assert r.total_bytes == 15863489 and r.compressor is None
    assert any("untagged" in n for n in r.notes)


def test_byte_tokenizer_and_sidecar():
    r = one("val_bpb:enabled tokenizer_kind=byte vocab_size=260\nval_bpb:byte_sidecar:enabled\n"
            "final_roundtrip val_loss:0.94 val_bpb:1.35\n")
    assert r.tokenizer_id == "byte260" and r.byte_sidecar


def test_several_runs_in_one_file_are_split():
    run = ('"""\ncode\n"""\nimport os\n' + "=" * 100 + "\n" + TRAINER_LOG)
    second = run.replace("seed:1234", "seed:99").replace("1.19643210", "1.19000000")
    runs = parse_text(run + second.replace("val_bpb:1.1964 ", "val_bpb:1.1900 "))
    assert [r.echo_seed for r in runs] == [1234, 99]
    assert [r.val_bpb for r in runs] == [1.19643210, 1.19]


def test_log_without_final_line_says_why():
    r = one("seed:42\nstep:0/10 val_loss:2.8153 val_bpb:1.5689 train_time:0ms\n"
            "step:16/100 fitness:-3.3667 t:565458ms step_avg:35341.1ms\n")
    assert r.status == "no_final_metric" and r.val_bpb is None
    assert "step 16/100" in r.reason and r.train_time_ms == 565458.0


def test_non_finite_scores_are_not_picked():
    r = one("final_int8_zlib_roundtrip val_loss:nan val_bpb:nan\n"
            "final_roundtrip val_loss:2.0 val_bpb:1.2\n")
    assert r.val_bpb == 1.2


@pytest.mark.parametrize("name,seed,variant", [
    ("train_seed42.log", 42, None), ("seed_42.log", 42, None), ("train_seed_42.txt", 42, None),
    ("train0.txt", 0, None), ("train_v2.txt", None, "v2"), ("ternary_log_42.txt", 42, None),
    ("log_10mins_seed-42.txt", 42, None), ("train.log", None, None),
    ("train_byte260_4h.log", None, None), ("log_eggroll_lora.txt", None, None),
    ("train_seed1337_rerun.log", 1337, None),
])
def test_seed_from_file_name(name, seed, variant):
    assert seed_from_name(name) == (seed, variant)
