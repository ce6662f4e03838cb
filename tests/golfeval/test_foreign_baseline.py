"""Proof against code nobody here wrote: the challenge baseline's own eval_val,
build_sentencepiece_luts, quantizer and dequantizer (../shared/reference/baseline/train_gpt.py,
imported as a module on CPU) against golf on the baseline's own files: final_model.pt (a bare
torch.save state dict, architecture inferred) and final_model.int8.ptz (int8 + zlib)."""

from __future__ import annotations

import io
import json
import types
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from golfeval.cli import main as golfeval_main
from golfpack.cli import main as golfpack_main

BASELINE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "baseline" \
    / "train_gpt.py"
DIMS = dict(vocab_size=1024, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2,
            mlp_mult=6)  # tok_emb and the MLP matrices exceed the baseline's 65,536 keep-float
L, N = 128, 4097  # 32 blocks of 128 targets
BASELINE_INT8 = "@control=fp32;@small=fp16;*=int8:pct(99.99984):baseline"


@pytest.fixture(scope="module")
def ref():
    if not BASELINE.is_file():
        pytest.skip("../shared/reference/baseline/train_gpt.py is absent")
    from golfpack.foreign.script import import_script

    return import_script(BASELINE)


def ref_gpt(ref, **over):
    kw = dict(DIMS, tie_embeddings=True, tied_embed_init_std=0.005, logit_softcap=30.0,
              rope_base=10000.0, qk_gain_init=1.5)
    kw.update(over)
    return ref.GPT(**kw)


@pytest.fixture(scope="module")
def baseline_files(ref, tmp_path_factory, one_thread):
    """A baseline GPT with every weight perturbed, saved the baseline's two ways."""
    torch.manual_seed(0)
    model = ref_gpt(ref)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("baseline")
    sd = model.state_dict()
    torch.save(sd, d / "final_model.pt")
    obj, _ = ref.quantize_state_dict_int8(sd)
    buf = io.BytesIO()
    torch.save(obj, buf)
    (d / "final_model.int8.ptz").write_bytes(zlib.compress(buf.getvalue(), level=9))
    return types.SimpleNamespace(dir=d, pt=d / "final_model.pt",
                                 ptz=d / "final_model.int8.ptz", state=sd, quant=obj)


def ref_eval(ref, model, shards, tokenizer):
    """The baseline's eval_val on CPU over the first N tokens -> (loss, bpb, tokens, bytes)."""
    import sentencepiece as spm

    cpu = torch.device("cpu")
    val = ref.load_validation_tokens(str(shards / "fineweb_val_*.bin"), L)[:N]
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    luts = ref.build_sentencepiece_luts(sp, DIMS["vocab_size"], cpu)
    args = types.SimpleNamespace(val_batch_size=8 * L, train_seq_len=L)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast(device_type="cuda") is off on CPU
        loss, bpb = ref.eval_val(args, model, 0, 1, cpu, 1, val, *luts)
    base, lead, boundary = luts
    x, y = val[:-1].long(), val[1:].long()
    nbytes = int((base[y].long() + (lead[y] & ~boundary[x]).long()).sum())
    return loss, bpb, int(y.numel()), nbytes


def golf_score(*args):
    r = CliRunner().invoke(golfeval_main, ["score", *map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def close(a, b, rel=2e-6):
    return abs(a - b) <= rel * abs(b)


def test_checkpoint_flat_matches_baseline_eval_val(ref, baseline_files, tiny_shards,
                                                   tiny_tokenizer):
    model = ref_gpt(ref)
    model.load_state_dict(baseline_files.state, strict=True)
    loss, bpb, n_tok, n_bytes = ref_eval(ref, model, tiny_shards, tiny_tokenizer)
    rep = golf_score("--checkpoint", baseline_files.pt, "--data", tiny_shards, "--tokenizer",
                     tiny_tokenizer, "--mode", "flat", "--seq-len", L, "--max-tokens", N,
                     "--no-sidecar")
    assert rep["scored_tokens"] == n_tok and rep["bytes"] == n_bytes
    assert close(rep["val_loss"], loss) and close(rep["val_bpb"], bpb), (rep, loss, bpb)
    assert rep["model"]["arch"] == "trainer.model:GPT"
    assert any("inferred the baseline GPT" in n and "4 heads" in n and "2 KV heads" in n
               for n in rep["model"]["notes"])


def test_int8_ptz_matches_baseline_dequantize_eval_val(ref, baseline_files, tiny_shards,
                                                       tiny_tokenizer):
    assert baseline_files.quant["quantized"], "nothing was quantized: dims too small"
    blob = zlib.decompress(baseline_files.ptz.read_bytes())
    model = ref_gpt(ref)
    model.load_state_dict(ref.dequantize_state_dict_int8(torch.load(io.BytesIO(blob))),
                          strict=True)
    loss, bpb, n_tok, n_bytes = ref_eval(ref, model, tiny_shards, tiny_tokenizer)
    rep = golf_score("--artifact", baseline_files.ptz, "--data", tiny_shards, "--tokenizer",
                     tiny_tokenizer, "--mode", "flat", "--seq-len", L, "--max-tokens", N,
                     "--no-sidecar")
    assert rep["scored_tokens"] == n_tok and rep["bytes"] == n_bytes
    assert close(rep["val_loss"], loss) and close(rep["val_bpb"], bpb), (rep, loss, bpb)
    assert any("baseline-int8 .ptz (zlib)" in n for n in rep["model"]["notes"])


def test_baseline_int8_scheme_is_bit_exact(ref, baseline_files):
    from golfpack.quant.qmodel import quantize_state_dict

    want = ref.dequantize_state_dict_int8(baseline_files.quant)
    q = quantize_state_dict(baseline_files.state, BASELINE_INT8)
    got = q.state_dict()
    for name, t in want.items():
        assert torch.equal(got[name].to(t.dtype), t), name
    for name, codes in baseline_files.quant["quantized"].items():
        assert torch.equal(torch.from_numpy(q[name].parts["codes"].data).reshape(codes.shape),
                           codes), name


@pytest.mark.slow
def test_compress_score_unpack_into_baseline_gpt(ref, baseline_files, tiny_shards,
                                                 tiny_tokenizer, tmp_path):
    from safetensors.torch import load_file

    art, back = tmp_path / "model.golf", tmp_path / "back.safetensors"
    r = CliRunner().invoke(golfpack_main, ["compress", str(baseline_files.pt), "-o", str(art),
                                           "--codec", "zstd", "--json"])
    assert r.exit_code == 0, r.output
    rep = golf_score("--artifact", art, "--data", tiny_shards, "--tokenizer", tiny_tokenizer,
                     "--mode", "flat", "--seq-len", L, "--max-tokens", N, "--no-sidecar")
    assert rep["model"]["source"] == "artifact" and rep["val_bpb"] > 0
    r = CliRunner().invoke(golfpack_main, ["unpack", str(art), "-o", str(back)])
    assert r.exit_code == 0, r.output
    model = ref_gpt(ref)
    model.load_state_dict(load_file(str(back)), strict=True)
    # bit-exact baseline export through the .golf format: same dequantized weights
    art2 = tmp_path / "int8.golf"
    r = CliRunner().invoke(golfpack_main, ["compress", str(baseline_files.pt), "-o", str(art2),
                                           "--scheme", BASELINE_INT8, "--codec", "zstd",
                                           "--json"])
    assert r.exit_code == 0, r.output
    from golfpack.artifact import load_artifact

    want = ref.dequantize_state_dict_int8(baseline_files.quant)
    got = load_artifact(art2).state_dict()
    assert all(torch.equal(got[k].to(v.dtype), v) for k, v in want.items())


@pytest.mark.slow
def test_config_dump_and_misfit_refused_before_writing(ref, baseline_files, tmp_path):
    dump = {**{k.upper(): v for k, v in DIMS.items()}, "TIE_EMBEDDINGS": 1,
            "ITERATIONS": 20000, "TRAIN_SEQ_LEN": 1024, "MATRIX_LR": 0.04}
    (tmp_path / "hp.json").write_text(json.dumps(dump))
    out = tmp_path / "a.golf"
    r = CliRunner().invoke(golfpack_main, ["compress", str(baseline_files.pt), "-o", str(out),
                                           "--config", str(tmp_path / "hp.json"), "--codec",
                                           "zstd", "--json"])
    assert r.exit_code == 0, r.output
    notes = json.loads(r.stdout)["notes"]
    assert any("iterations" in n and "matrix_lr" in n and "train_seq_len" in n for n in notes)
    (tmp_path / "bad.json").write_text(json.dumps({"vocab_size": 1024}))
    bad = tmp_path / "b.golf"
    r = CliRunner().invoke(golfpack_main, ["compress", str(baseline_files.pt), "-o", str(bad),
                                           "--config", str(tmp_path / "bad.json")])
    assert r.exit_code == 2 and not bad.exists()
    line = r.output.strip()
    assert "\n" not in line and "do not fit" in line, line


def test_bad_inputs_are_one_line_exit_2(baseline_files, tiny_shards, tiny_tokenizer, tmp_path):
    junk = tmp_path / "junk.ptz"
    junk.write_bytes(b"LRZI" + bytes(60))
    common = ["--data", tiny_shards, "--tokenizer", tiny_tokenizer, "--max-tokens", 300]
    for args in (["--artifact", junk], ["--checkpoint", baseline_files.ptz],
                 ["--checkpoint", baseline_files.pt, "--model", "no_such_module:GPT"],
                 ["--checkpoint", baseline_files.pt, "--model", "/nope/train_gpt.py:GPT"]):
        r = CliRunner().invoke(golfeval_main, ["score", *map(str, args + common)])
        assert r.exit_code == 2, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
    r = CliRunner().invoke(golfeval_main, ["score", "--artifact", str(junk), *map(str, common)])
    assert "lrzip" in r.output


@pytest.mark.slow
def test_unpack_keeps_bf16(ref, baseline_files, tmp_path):
    from safetensors.torch import load_file

    sd = {k: v.clone() for k, v in baseline_files.state.items()}
    sd["tok_emb.weight"] = sd["tok_emb.weight"].bfloat16()  # as the baseline saves it
    torch.save(sd, tmp_path / "bf16.pt")
    art, back = tmp_path / "bf16.golf", tmp_path / "bf16.safetensors"
    assert CliRunner().invoke(golfpack_main, ["compress", str(tmp_path / "bf16.pt"), "-o",
                                              str(art), "--codec", "zstd"]).exit_code == 0
    assert CliRunner().invoke(golfpack_main, ["unpack", str(art), "-o", str(back)]
                              ).exit_code == 0
    out = load_file(str(back))
    assert out["tok_emb.weight"].dtype == torch.bfloat16
    assert out["blocks.0.mlp.fc.weight"].dtype == torch.float32


def test_documented_adapter_scores_the_baseline_class(ref, baseline_files, tiny_shards,
                                                      tiny_tokenizer, tmp_path, monkeypatch):
    """docs/examples/baseline_adapter.py: the script's own GPT behind forward_logits."""
    adapter = Path(__file__).resolve().parents[2] / "docs" / "examples" / "baseline_adapter.py"
    monkeypatch.setenv("BASELINE_SCRIPT", str(BASELINE))
    (tmp_path / "dims.json").write_text(json.dumps(DIMS))
    model = ref_gpt(ref)
    model.load_state_dict(baseline_files.state, strict=True)
    loss, bpb, n_tok, n_bytes = ref_eval(ref, model, tiny_shards, tiny_tokenizer)
    rep = golf_score("--checkpoint", baseline_files.pt, "--model", f"{adapter}:build",
                     "--config", tmp_path / "dims.json", "--data", tiny_shards, "--tokenizer",
                     tiny_tokenizer, "--mode", "flat", "--seq-len", L, "--max-tokens", N,
                     "--no-sidecar")
    assert rep["model"]["protocol"] == "forward_logits"
    assert rep["scored_tokens"] == n_tok and rep["bytes"] == n_bytes
    assert close(rep["val_loss"], loss) and close(rep["val_bpb"], bpb), (rep, loss, bpb)


def test_untied_head_matches_baseline_eval_val(ref, tiny_shards, tiny_tokenizer, tmp_path,
                                               one_thread):
    """TIE_EMBEDDINGS=0: lm_head inferred, trainer.model:GPT scores it like the baseline."""
    torch.manual_seed(1)
    model = ref_gpt(ref, tie_embeddings=False, model_dim=64, mlp_mult=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(model.state_dict(), tmp_path / "untied.pt")
    loss, bpb, n_tok, n_bytes = ref_eval(ref, model, tiny_shards, tiny_tokenizer)
    rep = golf_score("--checkpoint", tmp_path / "untied.pt", "--data", tiny_shards,
                     "--tokenizer", tiny_tokenizer, "--mode", "flat", "--seq-len", L,
                     "--max-tokens", N, "--no-sidecar")
    assert any("untied lm_head" in n for n in rep["model"]["notes"])
    assert rep["scored_tokens"] == n_tok and rep["bytes"] == n_bytes
    assert close(rep["val_loss"], loss) and close(rep["val_bpb"], bpb), (rep, loss, bpb)
