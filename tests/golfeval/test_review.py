"""`golfeval review`: code bytes recounted from the folder (raw, folder-local modules,
self-extracting payload, compressed) against the logs, eval-time and post-clock limits,
data checks, the verdict line; held to every shared record folder and reference script."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from golfeval.cli import main
from golfeval.records.codecount import count_code, local_dependencies, unwrap
from golfeval.records.review import review_record
from golfpack.accounting import self_extracting

SCRIPT = b'import os\nimport helper\nfrom pkg import tools\nexec(open("extra.py").read())\n' \
         b'print("hello")\n'


def _log(code: int, model: int = 15_000_000, total_code: int | None = None, extra: str = "",
         seed: int = 1, tokenizer: str = "fineweb_1024_bpe.model") -> str:
    total_code = code if total_code is None else total_code
    return (f"seed:{seed}\nval_bpb:enabled tokenizer_kind=sentencepiece "
            f"tokenizer_path=/d/{tokenizer}\n"
            f"val_loader:shards pattern=/d/fineweb_val_*.bin tokens:62021632\n"
            "step:0/100 val_loss:6.9 val_bpb:4.1 train_time:0ms step_avg:0.01ms\n"
            "step:100/100 val_loss:2.10 val_bpb:1.25 train_time:590000ms step_avg:5900ms\n"
            "stopping_early: wallclock_cap train_time:590000ms step:100/100\n"
            f"Code size: {code} bytes\n"
            f"Serialized model int8+zlib: {model} bytes\n"
            f"Total submission size int8+zlib: {model + total_code} bytes\n" + extra +
            "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:9000ms\n"
            "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570\n")


def _folder(tmp_path, logs, script=SCRIPT, claim=1.2243657):
    (tmp_path / "submission.json").write_text(json.dumps({"val_bpb": claim,
                                                          "track": "10min_16mb"}))
    for i, text in enumerate(logs):
        (tmp_path / f"train_seed{i + 1}.log").write_text(text)
    if script is not None:
        (tmp_path / "train_gpt.py").write_bytes(script)
        (tmp_path / "helper.py").write_bytes(b"X = 1\n")
        (tmp_path / "pkg").mkdir(exist_ok=True)
        (tmp_path / "pkg" / "tools.py").write_bytes(b"Y = 2\n")
        (tmp_path / "extra.py").write_bytes(b"Z = 3\n")
    return tmp_path


def test_local_modules_imported_or_execd_are_counted(tmp_path):
    _folder(tmp_path, [])
    deps = {(p.name, role) for p, role in local_dependencies(SCRIPT, tmp_path)}
    assert deps == {("helper.py", "import"), ("tools.py", "import"), ("extra.py", "exec")}
    c = count_code(tmp_path, compressed=False)
    assert c.script == "train_gpt.py" and c.script_bytes == len(SCRIPT)
    assert [f.path for f in c.files] == ["train_gpt.py", "helper.py", "pkg/tools.py",
                                         "extra.py"]
    assert c.raw_bytes == len(SCRIPT) + 18


def test_self_extracting_script_is_unwrapped_without_running_it(tmp_path):
    src = b"import sys\nraise SystemExit('never run by a count')\n" + b"x = 1\n" * 200
    wrapper, codec = self_extracting(src)
    payload, how = unwrap(wrapper)
    assert how.startswith(codec) and b"SystemExit" in payload
    (tmp_path / "train_gpt.py").write_bytes(wrapper)
    c = count_code(tmp_path)
    assert c.raw_bytes == len(wrapper) and c.wrapper["payload_bytes"] == len(payload)
    assert unwrap(SCRIPT) is None


def test_a_wrapper_past_the_readers_bounds_is_counted_as_shipped_with_a_problem(tmp_path):
    script = b"import lzma\nexec(lzma.decompress(b''))\n" + b"#" * 16_000_000
    (tmp_path / "train_gpt.py").write_bytes(script)
    c = count_code(tmp_path, compressed=False)
    assert c.raw_bytes == len(script) and c.wrapper is None
    assert c.problems == ["train_gpt.py: a self-extracting source of 16,000,039 bytes is over "
                          "the 16,000,000 a reader looks into"]


def test_matching_logs_and_an_explained_edit_are_not_flagged(tmp_path):
    raw = len(SCRIPT) + 18
    rec = _folder(tmp_path, [_log(raw, seed=1), _log(raw - 5, seed=2), _log(raw, seed=3)])
    rv = review_record(rec, compressed=False)
    assert not [f for f in rv.flags if f["code"].startswith("code")], rv.flags
    notes = [r["code_note"] for r in rv.rows]
    assert notes[0] == "plain = recount" and "edited after the run" in notes[1]
    assert rv.rows[0]["total_recounted"] == 15_000_000 + raw
    assert rv.ok and rv.verdict.startswith(f"{tmp_path.name}: PASS")


def test_unexplained_code_sizes_are_flagged(tmp_path):
    raw = len(SCRIPT) + 18
    rec = _folder(tmp_path, [_log(len(SCRIPT), seed=1), _log(raw + 5000, seed=2),
                             _log(raw, total_code=raw + 999, seed=3)])
    codes = {f["code"] for f in review_record(rec, compressed=False).flags}
    assert {"code_modules_uncounted", "code_mismatch", "code_total_part"} <= codes


def test_recounted_total_over_the_budget_is_an_error(tmp_path):
    raw = len(SCRIPT) + 18
    model = 16_000_000 - raw + 1
    rec = _folder(tmp_path, [_log(raw - 3, model=model, seed=s) for s in (1, 2, 3)])
    rv = review_record(rec, compressed=False)
    bad = [f for f in rv.flags if f["code"] == "over_budget_recount"]
    assert len(bad) == 3 and all(f["severity"] == "error" for f in bad)
    assert not rv.ok and "FAIL" in rv.verdict


def test_eval_time_is_summed_per_run_and_post_clock_calibration_flagged(tmp_path):
    slow = ("final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570\n"
            "final_sliding_window val_loss:2.0100 val_bpb:1.2000 stride:64 eval_time:350000ms\n"
            "ttt_sliding:done val_loss=1.991 val_bpb=1.1800 elapsed=300.0s\n"
            "legal_ttt_exact val_loss:1.99100000 val_bpb:1.18000000\n")
    gptq = "GPTQ:collected 67 Hessians in 12.5s\n"
    rec = _folder(tmp_path, [_log(10, extra=gptq, seed=1) + slow,
                             _log(10, extra="gptq:reserving 15s, effective=585000ms\n" + gptq,
                                  seed=2)], script=None, claim=1.18)
    rv = review_record(rec)
    r1, r2 = rv.rows
    assert r1["eval_s"] == pytest.approx(9.0 + 350.0 + 300.0)  # the :done line = legal_ttt
    assert r2["eval_s"] == pytest.approx(9.0) and r1["post_clock_s"] == 12.5
    by = {(f["code"], f["message"].split(":")[0]): f["severity"] for f in rv.flags}
    assert by[("eval_time", "train_seed1.log")] == "error"
    assert by[("post_clock_work", "train_seed1.log")] == "error"
    assert by[("post_clock_work", "train_seed2.log")] == "info"
    assert ("code_not_recounted", "no train_gpt.py in the folder") in {
        (f["code"], f["message"].split(":")[0]) for f in rv.flags}


def test_case_transforming_tokenizer_needs_a_byte_sidecar(tmp_path):
    tok = "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
    rec = _folder(tmp_path, [_log(10, seed=s, tokenizer=tok) for s in (1, 2, 3)], script=None)
    flags = review_record(rec).flags
    assert sum(f["code"] == "byte_sidecar" for f in flags) == 3
    assert sum(f["code"] == "val_tokens" for f in flags) == 3  # 62,021,632 is sp1024's count


@pytest.fixture(scope="module")
def reference(shared_records):
    ref = shared_records.parent / "reference"
    if not (ref / "baseline" / "train_gpt.py").is_file():
        pytest.skip("../shared/reference is absent")
    return ref


def test_baseline_code_size_is_explained_not_flagged(shared_records, reference, tmp_path):
    rec = tmp_path / "baseline"
    shutil.copytree(shared_records / "track_10min_16mb" / "2026-03-17_NaiveBaseline", rec)
    shutil.copy(reference / "baseline" / "train_gpt.py", rec / "train_gpt.py")
    rv = review_record(rec)
    (row,) = rv.rows
    assert rv.code.raw_bytes == 47_686 and row["code_logged"]["plain"] == 47_642
    assert "+44 B): the script was edited after the run" in row["code_note"]
    assert row["total_recounted"] == 15_815_847 + 47_686
    assert not [f for f in rv.flags if f["code"].startswith(("code", "over_budget"))]


@pytest.mark.slow
def test_reference_scripts_recount(shared_records, reference):
    """Each shared script against the logs of its record: raw bytes equal or edit-sized,
    the compressed recipe within the minifier tolerance (or counted on the safe side), a
    packed submission recognised from its readable source."""
    pairs = {"phased_ttt_2026-04-14/train_gpt.py": "2026-04-14_MultiPhaseGlobalSGD_PhasedTTT",
             "caseops_2026-04-18/train_gpt.py": "2026-04-18_PR1626_CaseOps_Taper",
             "sdclip_2026-04-05/train_gpt_human.py":
                 "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2"}
    reviews = {}
    for script, folder in pairs.items():
        rv = reviews[script] = review_record(shared_records / "track_10min_16mb" / folder,
                                             code_files=[reference / script])
        assert rv.code.recipe_bytes and rv.code.minified_bytes, script
        warn = [f for f in rv.flags if f["code"].startswith(("code", "over_budget")) and
                f["severity"] != "info"]
        assert not warn, (script, warn)
    # the SDClip record shipped its readable script packed: its logs count 15,516 B
    sdclip = reviews["sdclip_2026-04-05/train_gpt_human.py"]
    assert all("shipped this code packed" in r["code_note"] for r in sdclip.rows)
    assert all(r["total_recounted"] == r["model_bytes"] + sdclip.code.recipe_bytes
               for r in sdclip.rows)
    phased = reviews["phased_ttt_2026-04-14/train_gpt.py"]
    assert all(r["code_note"].startswith("plain = recount") for r in phased.rows)
    # caseops' lossless_caps.py builds the data; the script does not import it
    c = count_code(files=[reference / "caseops_2026-04-18" / "train_gpt.py"], compressed=False)
    assert [f.path for f in c.files] == ["train_gpt.py"]


def test_review_of_every_shared_record_folder(shared_records):
    from golfeval.records.folders import find_record_folders

    runner = CliRunner()
    codes = {}
    for folder in find_record_folders(shared_records):
        out = runner.invoke(main, ["review", str(folder), "--json"])
        assert out.exit_code in (0, 1), (folder, out.output[-500:])
        doc = json.loads(out.stdout)
        assert doc["verdict"].startswith(folder.name + ": ")
        assert doc["ok"] == (out.exit_code == 0)
        codes[folder.name] = out.exit_code
    assert len(codes) == 15
    assert {k for k, v in codes.items() if v} == {"2026-04-05_118M_XNOR-Net_FP8_1024D_10L"}
    tree = runner.invoke(main, ["review", str(shared_records), "--json"])  # one call
    assert tree.exit_code == 1
    doc = json.loads(tree.stdout)
    assert len(doc["records"]) == 15 and doc["failed"] == [
        "2026-04-05_118M_XNOR-Net_FP8_1024D_10L"]
    text = runner.invoke(main, ["review", str(shared_records / "track_10min_16mb" /
                                              "2026-04-14_MultiPhaseGlobalSGD_PhasedTTT")])
    assert text.exit_code == 0 and "post_clock_work" in text.output
    assert text.output.rstrip().splitlines()[-1].startswith(
        "2026-04-14_MultiPhaseGlobalSGD_PhasedTTT: PASS")


def test_review_with_significance_and_usage_errors(shared_records, tmp_path):
    runner = CliRunner()
    rec = shared_records / "track_10min_16mb" / "2026-04-14_MultiPhaseGlobalSGD_PhasedTTT"
    sota = shared_records / "track_10min_16mb" / "2026-04-10_VarLenAttn"
    out = runner.invoke(main, ["review", str(rec), "--sota", str(sota), "--json"])
    assert out.exit_code == 1  # p = 0.75 with the README margin
    doc = json.loads(out.stdout)
    assert doc["significance"]["welch"]["t"] < 0 and "NOT significant" in doc["verdict"]
    out = runner.invoke(main, ["review", str(rec), "--sota", str(sota), "--rule", "frontier",
                               "--plot", str(tmp_path / "p.png")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert "negative when NEW is better" in out.output
    for args in (["review", str(shared_records), "--sota-bpb", "1.2"],
                 ["review", str(tmp_path / "nope")],
                 ["review", str(rec), "--plot", str(tmp_path / "q.png")]):
        bad = runner.invoke(main, args)
        assert bad.exit_code == 2, (args, bad.output)


def test_a_self_extracting_script_is_compared_as_shipped(tmp_path):
    src = b"import os\n" + b"y = 2\n" * 300
    wrapper, _ = self_extracting(src)
    rec = _folder(tmp_path, [_log(len(wrapper), seed=s) for s in (1, 2, 3)], script=None)
    (rec / "train_gpt.py").write_bytes(wrapper)
    rv = review_record(rec)
    assert rv.code.wrapper and all(r["code_note"] == "plain = recount" for r in rv.rows)
    assert rv.rows[0]["total_recounted"] == 15_000_000 + len(wrapper)


def test_a_log_that_counted_the_unpacked_payload_is_explained(tmp_path):
    src = b"import os\n" + b"z = 3\n" * 300
    wrapper, _ = self_extracting(src)
    payload, _ = unwrap(wrapper)
    rec = _folder(tmp_path, [_log(len(payload), seed=s) for s in (1, 2, 3)], script=None)
    (rec / "train_gpt.py").write_bytes(wrapper)
    rv = review_record(rec)
    assert all("unpacked payload" in r["code_note"] for r in rv.rows)
    assert not [f for f in rv.flags if f["code"].startswith("code")]


def test_review_claim_option_and_the_advice_for_a_folder_without_a_claim(tmp_path):
    raw = len(SCRIPT) + 18
    (tmp_path / "r").mkdir()
    rec = _folder(tmp_path / "r", [_log(raw, seed=s) for s in (1, 2, 3)], claim=None)
    runner = CliRunner()
    out = runner.invoke(main, ["review", str(rec)])
    assert out.exit_code == 1
    assert "no_claim: no claimed val_bpb (no submission.json val_bpb); add val_bpb to " \
           "submission.json or pass --claim" in out.output
    assert "`claim`" not in out.output
    ok = runner.invoke(main, ["review", str(rec), "--claim", "1.2243657", "--json"])
    doc = json.loads(ok.stdout)
    assert doc["verify"]["claim"] == 1.2243657 and doc["verify"]["claim_field"] == "--claim"
    assert doc["verify"]["classification"] == "mean", doc["verify"]
    (tmp_path / "other").mkdir()
    shutil.copytree(rec, tmp_path / "other" / "r2")
    two = runner.invoke(main, ["review", str(tmp_path), "--claim", "1.2"])
    assert two.exit_code == 2 and "--claim" in two.output and "single" in two.output


def test_code_outside_the_record_folder_is_never_read(tmp_path):
    """A script naming `../x.py` (or a link out of the folder) does not make the count read
    a file outside the record folder: it is named as a problem instead."""
    rec = tmp_path / "rec"
    rec.mkdir()
    (tmp_path / "secret.py").write_bytes(b"S = 1\n" * 50)
    (rec / "train_gpt.py").write_bytes(b"exec(open('../secret.py').read())\nimport linked\n")
    (rec / "linked.py").symlink_to(tmp_path / "secret.py")
    deps = local_dependencies((rec / "train_gpt.py").read_bytes(), rec)
    assert {(p.name, role) for p, role in deps} == {("secret.py", "outside"),
                                                     ("linked.py", "outside")}
    c = count_code(rec, compressed=False)
    assert [f.path for f in c.files] == ["train_gpt.py"]
    assert sum("outside the record folder" in p for p in c.problems) == 2
