"""A banked April record model (../shared/reference/phased_ttt_2026-04-14/train_gpt.py, its own
GPT class built on CPU with dense attention standing in for FlashAttention 3): golf
compresses its banks per slice, scores it through `--model PATH:GPT`, and reads the record's
own .ptz (its GPTQ export + brotli) — each checked against the record's own functions."""

from __future__ import annotations

import io
import json

import pytest
import torch
from click.testing import CliRunner
from tinymodels import PHASED_RECORD as RECORD

from golfeval.cli import main as golfeval_main
from golfpack.cli import main as golfpack_main

HP = dict(vocab_size=512, num_layers=4, model_dim=128, num_heads=4, num_kv_heads=2,
          mlp_mult=5.0, xsa_last_n=2, rope_dims=16, num_loops=1, loop_start=1, loop_end=2,
          parallel_start_layer=3, train_seq_len=128, eval_seq_len=128)
L, N = 128, 2049
SPEC = "@control=fp32;tok_emb*=int8;*=int6"


@pytest.fixture(scope="module")
def rec(tmp_path_factory, one_thread):
    from tinymodels import record_banked_gpt

    mod, model, hp = record_banked_gpt(HP)
    d = tmp_path_factory.mktemp("record")
    torch.save(model.state_dict(), d / "final_model.pt")
    (d / "hp.json").write_text(json.dumps({**HP, "iterations": 20000, "not_a_setting": 1}))
    return mod, model, d


def own_flat_loss(model, tokens) -> float:
    """Mean next-token loss over whole blocks of L with the record's own forward(x, y)."""
    x = torch.as_tensor(tokens[:N - 1].astype("int64")).view(-1, L)
    y = torch.as_tensor(tokens[1:N].astype("int64")).view(-1, L)
    model.eval()
    with torch.no_grad():
        return float(model(x, y))


def val_tokens(shards):
    from golfeval.data.shards import load_tokens

    return load_tokens(shards, "val", max_tokens=N)


def score(*args):
    r = CliRunner().invoke(golfeval_main, ["score", *map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_dense_attention_matches_sdpa_varlen():
    from golfpack.foreign.dense_attn import flash_attn_func, flash_attn_varlen_func

    torch.manual_seed(1)
    q, k, v = torch.randn(1, 12, 4, 8), torch.randn(1, 12, 2, 8), torch.randn(1, 12, 2, 8)
    cu = torch.tensor([0, 5, 12, 12], dtype=torch.int32)  # two documents + padding
    got = flash_attn_varlen_func(q[0], k[0], v[0], cu_seqlens_q=cu, cu_seqlens_k=cu,
                                 max_seqlen_q=7, max_seqlen_k=7, causal=True)
    want = torch.cat([flash_attn_func(q[:, a:b], k[:, a:b], v[:, a:b], causal=True)[0]
                      for a, b in ((0, 5), (5, 12))])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_banks_compress_per_slice_and_score(rec, tiny_shards, tiny_tokenizer, tmp_path):
    from golfpack.artifact import load_artifact
    from golfpack.quant.rows import parse_scheme, quantize

    mod, model, d = rec
    art = tmp_path / "rec.golf"
    r = CliRunner().invoke(golfpack_main, [
        "compress", str(d / "final_model.pt"), "-o", str(art), "--config", str(d / "hp.json"),
        "--model", f"{RECORD}:GPT", "--scheme", SPEC, "--codec", "zstd", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["weights_checked"] is True
    assert any("not_a_setting" in n and "iterations" not in n for n in rep["notes"])
    qm = load_artifact(art).quantized_model()
    for bank in ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank"):
        full = model.state_dict()[bank]
        for i in range(full.shape[0]):
            e = qm[f"{bank}[{i}]"]
            want = quantize(full[i], parse_scheme("int6"))
            assert e.shape == tuple(full.shape[1:])
            assert torch.equal(torch.from_numpy(e.parts["scales"].data.copy()), want.scales)
            assert torch.equal(torch.from_numpy(e.parts["codes"].data.copy()).view_as(
                want.codes),
                               want.codes)
    insp = json.loads(CliRunner().invoke(golfpack_main, ["inspect", str(art), "--json"]).stdout)
    assert {"qo_bank[3]", "mlp_down_bank[0]"} <= {t["name"] for t in insp["tensors"]}
    got = score("--artifact", art, "--model", f"{RECORD}:GPT", "--config", d / "hp.json",
                "--data", tiny_shards, "--tokenizer", tiny_tokenizer, "--mode", "flat",
                "--seq-len", L, "--max-tokens", N, "--no-sidecar")
    assert got["model"]["protocol"] == "forward_logits"
    # the same dequantized weights in the record's own class, scored by its own forward
    from golfpack.foreign.script import build_from_script

    own, _, _ = build_from_script(f"{RECORD}:GPT", HP)
    own.load_state_dict(load_artifact(art).state_dict(), strict=True)
    want = own_flat_loss(own, val_tokens(tiny_shards))
    assert abs(got["val_loss"] - want) <= 2e-6 * want


def test_slice_rules_name_one_slice(rec):
    from golfpack.quant.qmodel import quantize_state_dict

    _, model, _ = rec
    qm = quantize_state_dict(model.state_dict(), "@control=fp32;qo_bank[3]=int8;*=int5")
    assert qm["qo_bank[3]"].scheme.startswith("int8")
    assert qm["qo_bank[2]"].scheme.startswith("int5")
    assert qm.state_dict()["qo_bank"].shape == model.qo_bank.shape


@pytest.mark.slow
def test_record_ptz_loads_like_its_own_deserialize(rec, tiny_shards, tiny_tokenizer,
                                                   tmp_path):
    mod, model, d = rec
    flat = mod._unbank_state_dict(model.state_dict(), HP["num_layers"])
    hess = {k: torch.eye(v.shape[1]) for k, v in flat.items() if v.ndim == 2}
    h = type("H", (), {"embed_clip_sigmas": 20.0, "mlp_clip_sigmas": 10.0,
                       "attn_clip_sigmas": 13.0, "matrix_clip_sigmas": 12.85,
                       "embed_bits": 8, "matrix_bits": 6})()
    result, meta = mod.gptq_mixed_quantize(flat, hess, h)
    assert any("gptq" in m for m in meta.values()), "nothing quantized: dims too small"
    buf = io.BytesIO()
    torch.save({"w": result, "m": meta}, buf)
    ptz = tmp_path / "final_model.int6.ptz"
    ptz.write_bytes(mod._compress(buf.getvalue(), "brotli"))
    got = score("--artifact", ptz, "--model", f"{RECORD}:GPT", "--config", d / "hp.json",
                "--data", tiny_shards, "--tokenizer", tiny_tokenizer, "--mode", "flat",
                "--seq-len", L, "--max-tokens", N, "--no-sidecar")
    assert any("records .ptz (brotli, byte-shuffled)" in n for n in got["model"]["notes"])
    # the record's own path back: dequantize_mixed + _rebank_state_dict into its GPT
    from golfpack.foreign.script import build_from_script

    own, _, _ = build_from_script(f"{RECORD}:GPT", HP)
    raw = mod._decompress(ptz.read_bytes(), "brotli")
    state = torch.load(io.BytesIO(raw), map_location="cpu")
    template = mod._unbank_state_dict(own.state_dict(), HP["num_layers"])
    deq = mod.dequantize_mixed(state["w"], state["m"], template)
    kv = HP["num_kv_heads"] * HP["model_dim"] // HP["num_heads"]
    own.load_state_dict(mod._rebank_state_dict(deq, HP["num_layers"], HP["model_dim"], kv,
                                               int(HP["mlp_mult"] * HP["model_dim"])),
                        strict=True)
    want = own_flat_loss(own, val_tokens(tiny_shards))
    assert abs(got["val_loss"] - want) <= 2e-6 * want
