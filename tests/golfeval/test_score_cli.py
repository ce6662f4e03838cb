"""`golfeval score` end to end on a tiny checkpoint: report fields, per-token output,
sidecars, and every refusal (vocab, data ids, tokenizer hash, outputs)."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner
from tinymodels import live_gpt

from golfeval.cli import main as golfeval_main
from golfeval.data.bytetables import ByteTables
from golfeval.data.shards import load_tokens, read_shard, write_shard
from golfeval.score.evaluate import evaluate
from golfpack.checkpoint import save

N = 1500
BASE = ["--seq-len", "64", "--stride", "16", "--max-tokens", str(N), "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(vocab=512, seed=0):
    m, cfg = live_gpt(seed, vocab_size=vocab, model_dim=64)
    return m, cfg.to_dict()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    m, cfg = tiny_model()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save(path, m.state_dict(), cfg)
    return path


def run(*args):
    r = CliRunner().invoke(golfeval_main, ["score", *map(str, args)])
    return r, (json.loads(r.stdout) if "--json" in args and r.exit_code == 0 else None)


def test_json_report_and_line(ckpt, tiny_shards, tiny_tokenizer):
    r, rep = run("--checkpoint", ckpt, "--data", tiny_shards, "--tokenizer", tiny_tokenizer,
                 *BASE, "--json")
    assert r.exit_code == 0, r.output
    for key in ("val_loss", "val_bpb", "scored_tokens", "bytes", "mode", "seq_len", "stride",
                "seconds", "tokens_per_second", "targets", "windows", "bytes_source"):
        assert key in rep
    tokens = load_tokens(tiny_shards, "val", max_tokens=N)
    want_bytes = int(ByteTables.from_tokenizer(tiny_tokenizer).target_bytes(tokens).sum())
    assert rep["scored_tokens"] == rep["targets"] == N - 1
    assert rep["bytes"] == want_bytes and rep["bytes_source"] == "tables"
    assert (rep["mode"], rep["seq_len"], rep["stride"], rep["ranks"]) == ("sliding", 64, 16, 1)
    assert math.isclose(rep["val_bpb"], rep["nats_sum"] / math.log(2) / rep["bytes"])
    assert rep["line"] == (f"final_sliding_window_exact val_loss:{rep['val_loss']:.8f} "
                           f"val_bpb:{rep['val_bpb']:.8f}")
    assert rep["tokenizer"]["matches_model"] is None  # checkpoints record no tokenizer


def test_text_output_and_flat(ckpt, tiny_shards, tiny_tokenizer):
    r, _ = run("--checkpoint", ckpt, "--data", tiny_shards, "--tokenizer", tiny_tokenizer,
               *BASE, "--mode", "flat")
    assert r.exit_code == 0, r.output
    assert re.search(r"^final_flat_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$", r.stdout,
                     re.M)
    assert f"scored  {(N - 1) // 64 * 64:,} of {N - 1:,} targets" in r.stdout


def test_per_token_output(ckpt, tiny_shards, tiny_tokenizer, tmp_path):
    out = tmp_path / "pt.npz"
    args = ["--checkpoint", ckpt, "--data", tiny_shards, "--tokenizer", tiny_tokenizer, *BASE,
            "--per-token", out, "--json"]
    r, rep = run(*args)
    assert r.exit_code == 0, r.output
    with np.load(out) as z:
        nats, nbytes = z["nats"], z["bytes"]
    assert nats.dtype == np.float64 and nats.shape == (N - 1,) and not np.isnan(nats).any()
    assert math.isclose(nats.sum(), rep["nats_sum"], rel_tol=1e-12)
    assert int(nbytes.sum()) == rep["bytes"]
    r, _ = run(*args)
    assert r.exit_code == 2 and "exists; pass --force" in r.output
    r, _ = run(*args, "--force")
    assert r.exit_code == 0
    r, _ = run("--checkpoint", ckpt, "--data", tiny_shards, "--tokenizer", tiny_tokenizer,
               *BASE, "--per-token", tiny_tokenizer, "--force")
    assert r.exit_code == 2 and "refusing to overwrite the input" in r.output


def test_doc_isolation_flag(ckpt, tiny_shards, tiny_tokenizer):
    common = dict(checkpoint=ckpt, data=tiny_shards, tokenizer=tiny_tokenizer, seq_len=64,
                  stride=16, max_tokens=N, device="cpu")
    iso = evaluate(doc_isolation=True, **common)
    plain = evaluate(**common)
    assert iso["doc_isolation"] and iso["scored_tokens"] == plain["scored_tokens"]
    assert iso["nats_sum"] != plain["nats_sum"]


def test_sidecars_override_tables(ckpt, tiny_shards, tiny_tokenizer, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tiny_shards / "fineweb_val_000000.bin", data)
    n = read_shard(data / "fineweb_val_000000.bin").size
    write_shard(data / "fineweb_val_bytes_000000.bin", np.full(n, 2))
    common = dict(checkpoint=ckpt, tokenizer=tiny_tokenizer, seq_len=64, stride=16,
                  max_tokens=N, device="cpu")
    side = evaluate(data=data, **common)
    assert side["bytes_source"] == "sidecar" and side["bytes"] == 2 * (N - 1)
    tables = evaluate(data=data, no_sidecar=True, **common)
    assert tables["bytes_source"] == "tables" and tables["bytes"] != side["bytes"]
    assert tables["nats_sum"] == side["nats_sum"]
    write_shard(data / "fineweb_val_bytes_000000.bin", np.full(n - 1, 2), force=True)
    r, _ = run("--checkpoint", ckpt, "--data", data, "--tokenizer", tiny_tokenizer,
               "--seq-len", "64", "--device", "cpu")
    assert r.exit_code == 2 and "one entry per token" in r.output


def test_refuses_small_model_vocab(tmp_path, tiny_shards, tiny_tokenizer):
    m, cfg = tiny_model(vocab=256)
    save(tmp_path / "small.safetensors", m.state_dict(), cfg)
    r, _ = run("--checkpoint", tmp_path / "small.safetensors", "--data", tiny_shards,
               "--tokenizer", tiny_tokenizer, *BASE)
    assert r.exit_code == 2
    assert r.output.strip() == "error: model vocab 256 is smaller than the tokenizer's 512"


@pytest.mark.parametrize("vocab,bad_id,match", [
    (512, 600, "token id 600 .* outside the model's 512-token vocabulary"),
    (1024, 700, "token id 700 is outside the tokenizer's 512-piece vocabulary")])
def test_refuses_out_of_vocab_data(tmp_path, tiny_tokenizer, vocab, bad_id, match):
    m, cfg = tiny_model(vocab=vocab)
    save(tmp_path / "m.safetensors", m.state_dict(), cfg)
    write_shard(tmp_path / "fineweb_val_000000.bin", [1, 5, 6, bad_id, 7, 8])
    r, _ = run("--checkpoint", tmp_path / "m.safetensors", "--data", tmp_path, "--tokenizer",
               tiny_tokenizer, "--seq-len", "4", "--stride", "2", "--device", "cpu")
    assert r.exit_code == 2 and re.search(match, r.output), r.output
    assert r.output.count("\n") == 1


def _fake_artifact_module(sha):
    m, cfg = tiny_model()

    class Art:
        config = cfg
        tokenizer_sha256 = sha
        vocab_size = 512

        def state_dict(self):
            return m.state_dict()

    mod = types.ModuleType("golfpack.artifact")
    mod.load_artifact = lambda path: Art()
    return mod


def test_artifact_tokenizer_hash(monkeypatch, tmp_path, tiny_shards, tiny_tokenizer):
    """The loader contract (load_artifact -> state_dict/config/tokenizer_sha256/vocab_size),
    exercised with a stand-in so the hash refusal is tested whatever the artifact format."""
    from golfeval.data.tokenizer import file_sha256

    art = tmp_path / "model.golf"
    art.write_bytes(b"stand-in")
    args = ["--artifact", art, "--data", tiny_shards, "--tokenizer", tiny_tokenizer, *BASE]
    monkeypatch.setitem(sys.modules, "golfpack.artifact", _fake_artifact_module("ab" * 32))
    r, _ = run(*args)
    assert r.exit_code == 2 and "tokenizer sha256 abababababababab" in r.output
    assert "pass --force" in r.output and r.output.count("\n") == 1
    r, rep = run(*args, "--force", "--json", "--mode", "flat")
    assert r.exit_code == 0 and rep["tokenizer"]["matches_model"] is False
    assert rep["label"] == "final_roundtrip_exact"
    monkeypatch.setitem(sys.modules, "golfpack.artifact",
                        _fake_artifact_module(file_sha256(tiny_tokenizer)))
    r, rep = run(*args, "--json")
    assert r.exit_code == 0 and rep["tokenizer"]["matches_model"] is True


def test_real_artifact_round_trip(tmp_path, tiny_shards, tiny_tokenizer, ckpt):
    """golfpack's own artifacts: dequantized scoring lands near the checkpoint's, the
    recorded tokenizer hash is checked, and flat mode prints the roundtrip label."""
    art_mod = pytest.importorskip("golfpack.artifact")
    qmodel = pytest.importorskip("golfpack.quant.qmodel")
    from golfpack.checkpoint import load

    state, cfg = load(ckpt)
    qm = qmodel.quantize_state_dict(state)
    good, bad = tmp_path / "good.golf", tmp_path / "bad.golf"
    good.write_bytes(art_mod.encode_artifact(qm, cfg, codec="zlib", tokenizer=tiny_tokenizer)[0])
    bad.write_bytes(art_mod.encode_artifact(
        qm, cfg, codec="zlib", tokenizer={"sha256": "cd" * 32, "vocab_size": 512})[0])
    common = ["--data", tiny_shards, "--tokenizer", tiny_tokenizer, *BASE, "--json"]
    r, ref = run("--checkpoint", ckpt, *common)
    r, rep = run("--artifact", good, *common)
    assert r.exit_code == 0, r.output
    assert rep["tokenizer"]["matches_model"] is True and rep["model"]["source"] == "artifact"
    assert rep["scored_tokens"] == ref["scored_tokens"] and rep["bytes"] == ref["bytes"]
    assert abs(rep["val_bpb"] - ref["val_bpb"]) < 0.05 * ref["val_bpb"]
    r, _ = run("--artifact", bad, *common)
    assert r.exit_code == 2 and "tokenizer sha256 cdcdcdcdcdcdcdcd" in r.output
    r, rep = run("--artifact", good, *common, "--mode", "flat")
    assert rep["label"] == "final_roundtrip_exact"


def test_usage_errors(ckpt, tiny_shards, tiny_tokenizer):
    r, _ = run("--data", tiny_shards, "--tokenizer", tiny_tokenizer)
    assert r.exit_code == 2 and "exactly one of --artifact or --checkpoint" in r.output
    r, _ = run("--checkpoint", ckpt, "--data", tiny_shards, "--tokenizer", tiny_tokenizer,
               "--model", "nocolon")
    assert r.exit_code == 2 and "module:factory" in r.output
    r, _ = run("--checkpoint", ckpt, "--data", tiny_shards, "--tokenizer", tiny_tokenizer,
               "--seq-len", "16", "--stride", "32", "--device", "cpu")
    assert r.exit_code == 2 and "stride 32 exceeds seq_len 16" in r.output
    r = CliRunner().invoke(golfeval_main, ["score", "--help"])
    assert r.exit_code == 0 and "torchrun" in r.output
