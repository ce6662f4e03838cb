"""Calibration Hessians: every linear layer and the tied head, shared inputs shared, train
shards only, self-generated text reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from golfpack.errors import GolfError
from golfpack.hessian import calib, shardread
from trainer.model import GPT, GPTConfig, rms_norm

TINY = dict(vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(seed=0):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(**TINY))
    for mod in m.modules():  # zero-initialised projections would hide bugs
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, std=0.1)
    return m


def _write_shard(path, tokens):
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    with open(path, "wb") as fh:
        fh.write(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def test_hessians_cover_every_linear_and_the_tied_head():
    model = _tiny()
    batches = [torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(i))
               for i in range(3)]
    hs = calib.collect_hessians(model, batches)
    linears = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert hs.names() == linears + ["tok_emb.weight"]
    assert all(hs.n_tokens[k] == 3 * 2 * 16 for k in hs.names())
    # q, k and v read the same tensor: one H object, and the groups say so.
    a = "blocks.0.attn."
    assert hs[a + "c_q.weight"] is hs[a + "c_k.weight"] is hs[a + "c_v.weight"]
    assert [a + "c_q.weight", a + "c_k.weight", a + "c_v.weight"] in hs.groups
    # The tied head's H is Σ hᵀh of the final-norm output; the first layer's of rms_norm(x).
    with torch.no_grad():
        h = torch.cat([model.hidden(b).reshape(-1, 32) for b in batches]).double()
        x0 = torch.cat([rms_norm(rms_norm(model.tok_emb(b))).reshape(-1, 32)
                        for b in batches]).double()
    torch.testing.assert_close(hs["tok_emb.weight"], h.T @ h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hs[a + "c_q.weight"], x0.T @ x0, rtol=1e-5, atol=1e-6)
    assert "logits" not in vars(model)  # the head hook was removed again
    for H in hs.H.values():
        assert H.dtype == torch.float64 and torch.equal(H, H.T)


def test_any_module_factory_model():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.up = nn.Linear(8, 12)
            self.down = nn.Linear(12, 10)

        def forward(self, idx):
            return self.down(torch.relu(self.up(self.emb(idx))))

    hs = calib.collect_hessians(Tiny(), [torch.randint(0, 10, (2, 5))])
    assert hs.names() == ["up.weight", "down.weight"]
    assert hs["down.weight"].shape == (12, 12)


def test_calibration_refuses_validation_shards(tmp_path):
    for name in ("fineweb_train_000000.bin", "fineweb_val_000000.bin",
                 "fineweb_val_bytes_000000.bin"):
        _write_shard(tmp_path / name, np.arange(2000) % 64)
    for bad in (tmp_path / "fineweb_val_000000.bin", tmp_path / "fineweb_val_*.bin",
                tmp_path / "*.bin", tmp_path / "fineweb_val_bytes_000000.bin",
                tmp_path / "fineweb_*"):
        with pytest.raises(shardread.CalibrationDataError, match="validation") as exc:
            shardread.train_shard_paths(bad)
        assert "\n" not in str(exc.value)
    # A directory means its train shards only.
    assert shardread.train_shard_paths(tmp_path) == [str(tmp_path / "fineweb_train_000000.bin")]
    batches = calib.shard_batches(tmp_path, 2, 64, 32, vocab_size=64)
    assert [tuple(b.shape) for b in batches] == [(2, 32), (2, 32)]
    assert batches[1][0, 0].item() == 64 % 64
    with pytest.raises(shardread.CalibrationDataError, match="shards hold"):
        calib.shard_batches(tmp_path, 100, 64, 32)
    with pytest.raises(shardread.CalibrationDataError, match="vocab"):
        calib.shard_batches(tmp_path, 1, 64, 32, vocab_size=10)
    (tmp_path / "fineweb_train_000001.bin").write_bytes(b"\0" * 100)
    with pytest.raises(shardread.CalibrationDataError, match="magic"):
        calib.shard_batches(tmp_path, 1, 2048, 32)


def test_cli_refuses_validation_calibration(tmp_path):
    """The user-facing error is one line with exit code 2 (golfpack compress --calib)."""
    from click.testing import CliRunner

    from golfpack import checkpoint
    from golfpack.cli import main

    _write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(2000) % 64)
    ck = tmp_path / "m.safetensors"
    checkpoint.save(ck, _tiny().state_dict(), dict(TINY))
    for calib_arg in (str(tmp_path / "fineweb_val_*.bin"), str(tmp_path / "*")):
        r = CliRunner().invoke(main, ["compress", str(ck), "-o", str(tmp_path / "out.golf"),
                                      "--fit", "--budget", "100000", "--calib", calib_arg])
        assert r.exit_code == 2, r.output
        assert r.stderr.startswith("error:") and "validation" in r.stderr
        assert r.stderr.count("\n") == 1
    assert not (tmp_path / "out.golf").exists()


def test_self_generated_calibration_is_reproducible():
    model = _tiny()
    a = calib.generate_batches(model, 1, 12, 6, seed=5)
    b = calib.generate_batches(model, 1, 12, 6, seed=5)
    c = calib.generate_batches(model, 1, 12, 6, seed=6)
    assert [tuple(t.shape) for t in a] == [(2, 6)]
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert bool((a[0][:, 0] == calib.BOS_ID).all())
    hs = calib.calibrate(model, "self", n_batches=1, batch_tokens=12, seq_len=6, seed=5)
    ref = calib.collect_hessians(model, a)
    for k in ref.names():
        assert torch.equal(hs[k], ref[k])
    with pytest.raises(GolfError, match="temperature"):
        calib.generate_batches(model, 1, 12, 6, temperature=0.0)
