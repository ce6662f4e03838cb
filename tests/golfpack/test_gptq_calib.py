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


# --------------------------------------------------------------------------- lookup role


class _FixedLookup(nn.Module):
    """Stands in for tok_emb: returns a given leaf tensor (its gradient is then plain
    autograd), keeping the embedding weight for the tied head."""

    def __init__(self, weight, out):
        super().__init__()
        self.weight, self.out = weight, out

    def forward(self, idx):
        return self.out


def test_lookup_curvature_equals_brute_force():
    model = _tiny(3)
    batches = [torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(i))
               for i in range(3)]
    lc = calib.lookup_curvature(model, batches)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert "logits" not in vars(model) and not model.tok_emb._forward_hooks
    emb = model.tok_emb
    G = torch.zeros(32, 32, dtype=torch.float64)
    num = den = 0.0
    for b in batches:
        x, y = b[:, :-1], b[:, 1:]
        e = emb.weight.detach()[x].clone().requires_grad_(True)
        model.tok_emb = _FixedLookup(emb.weight, e)
        logits = model(x)
        torch.nn.functional.cross_entropy(logits.reshape(-1, 64), y.reshape(-1),
                                          reduction="sum").backward()
        g = e.grad.reshape(-1, 32).double()
        G += g.T @ g
        with torch.no_grad():
            p = torch.softmax(logits.double(), -1).reshape(-1, 64)
            hn = model.hidden(x).double().reshape(-1, 32).pow(2).sum(-1)
        num += float(((1 - p.pow(2).sum(-1)) * hn).sum())
        den += float(hn.sum())
        model.tok_emb = emb
    model.zero_grad(set_to_none=True)
    assert lc.n_tokens == 3 * 2 * 16
    torch.testing.assert_close(lc.G, G, rtol=1e-4, atol=1e-9)
    assert lc.head_scale == pytest.approx(num / den, rel=1e-6)
    torch.testing.assert_close(lc.in_head_units(96), G * 96 / 96 / (num / den), rtol=1e-4,
                               atol=1e-9)


def _lookup_curvature_reference(model, batches, autocast):
    """The loop lookup_curvature ran before it shared calib.run_batches/_Accumulator (the
    same operations in the same order, so the results must agree to the bit)."""
    emb, d = model.tok_emb, model.tok_emb.embedding_dim
    G = torch.zeros(d, d, dtype=torch.float64)
    outs, seen, num, den, n = [], {}, 0.0, 0.0, 0

    def keep(_m, _args, out):
        out.requires_grad_(True)
        out.retain_grad()
        outs.append(out)
        return out

    original = model.logits

    def logits_hook(h):
        seen["h"] = h
        return original(h)

    for p in model.parameters():
        p.requires_grad_(False)
    handle = emb.register_forward_hook(keep)
    model.logits = logits_hook
    model.eval()
    try:
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = model(b[:, :-1]).float()
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                              b[:, 1:].reshape(-1), reduction="sum").backward()
            g = torch.cat([o.grad.detach().reshape(-1, d) for o in outs])
            for i in range(0, g.shape[0], 4096):
                c = g[i:i + 4096].to(torch.float32)
                G += (c.T @ c).to(torch.float64)
            with torch.no_grad():
                p = torch.softmax(logits.detach().double(), -1).reshape(-1, logits.shape[-1])
                e = seen["h"].detach().double().reshape(-1, d).pow(2).sum(-1)
                num += float(((1.0 - p.pow(2).sum(-1)) * e).sum())
                den += float(e.sum())
            n += b[:, 1:].numel()
            outs.clear()
    finally:
        handle.remove()
        del model.logits
        for p in model.parameters():
            p.requires_grad_(True)
        model.train()
    return G, num / den, n


@pytest.mark.parametrize("autocast", [False, True])
def test_lookup_curvature_is_the_calibration_loop_bit_for_bit(autocast):
    """lookup_curvature runs through calib.run_batches and _Accumulator: the same G, head
    scale and token count as its own loop gave, to the bit (bf16 autocast on CPU too: the
    float64 sums stay outside it)."""
    model = _tiny(5)
    batches = [torch.randint(0, 64, (3, 21), generator=torch.Generator().manual_seed(20 + i))
               for i in range(3)]
    G, scale, n = _lookup_curvature_reference(model, batches, autocast)
    lc = calib.lookup_curvature(model, batches, autocast=autocast)
    assert torch.equal(lc.G, G) and lc.head_scale == scale and lc.n_tokens == n == 3 * 3 * 20
    assert model.training and all(p.requires_grad and p.grad is None
                                  for p in model.parameters())
    with pytest.raises(GolfError, match="no batches"):
        calib.lookup_curvature(model, [])
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert "logits" not in vars(model) and not model.tok_emb._forward_hooks


def test_hessians_under_cpu_autocast_are_summed_outside_it():
    """bf16 autocast on CPU runs the model in bf16, never the float64 sums' products: H is
    Σ xᵀx of the inputs the layers saw, in float32 chunks summed in float64."""
    model = _tiny(6)
    batches = [torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(i))
               for i in range(2)]
    hs = calib.collect_hessians(model, batches, autocast=True)
    seen = []
    fc = model.blocks[1].mlp.fc
    h = fc.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for b in batches:
            model(b)
    h.remove()
    d = seen[0].shape[-1]
    want = torch.zeros(d, d, dtype=torch.float64)
    for s in seen:
        c = s.reshape(-1, s.shape[-1]).float()
        want += (c.T @ c).double()
    assert torch.equal(hs["blocks.1.mlp.fc.weight"], want)


def test_lookup_mix_never_raises_calibration_loss():
    from golfpack.hessian import gptq, lookupmix
    from golfpack.hessian import pipeline as fitpack
    from golfpack.quant.rows import parse_scheme

    model = _tiny(4)
    batches = [torch.randint(0, 64, (2, 33), generator=torch.Generator().manual_seed(10 + i))
               for i in range(3)]
    hs = calib.collect_hessians(model, batches)
    lc = calib.lookup_curvature(model, batches)
    mixed = lookupmix.mix_hessians(hs, lc, 2.0)
    key = "tok_emb.weight"
    torch.testing.assert_close(mixed[key], hs[key] + 2.0 * lc.in_head_units(hs.n_tokens[key]))
    assert mixed["blocks.0.mlp.fc.weight"] is hs["blocks.0.mlp.fc.weight"]
    assert lookupmix.mix_hessians(hs, lc, 0.0) is hs
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scheme = parse_scheme("int4:gptq-lite")
    loss_fn = fitpack.calibration_loss_fn(model, batches)
    lam, out, rep = lookupmix.choose_lookup_mix(sd[key], hs, lc, scheme, loss_fn)
    r0 = gptq.quantize_gptq(sd[key], hs[key], scheme)
    loss0 = loss_fn({key: r0.codes.float() * r0.scales.float()[:, None]})
    assert rep["losses"]["0"] == pytest.approx(loss0, rel=1e-9)
    assert rep["losses"][f"{lam:g}"] <= loss0
    assert min(rep["losses"].values()) == rep["losses"][f"{lam:g}"]
    SPEC4 = "@control=fp32;*=int4:gptq-lite"  # no @small rule: the tiny embedding is int4
    # the pipeline helper: a given λ mixes without a search, 0 leaves H alone
    same, none = fitpack.apply_lookup_mix(model, sd, hs, batches, SPEC4, 0)
    assert same is hs and none is None
    given, info = fitpack.apply_lookup_mix(model, sd, hs, batches, SPEC4, 2.0)
    torch.testing.assert_close(given[key], mixed[key])
    assert info["lambda"] == 2.0
    auto, info = fitpack.apply_lookup_mix(model, sd, hs, batches, SPEC4, "auto")
    assert info["lambda"] in lookupmix.MIX_CANDIDATES
    with pytest.raises(GolfError):
        fitpack.apply_lookup_mix(model, sd, hs, batches, None, -1.0)
    with pytest.raises(GolfError):
        fitpack.apply_lookup_mix(model, sd, hs, batches, None, "lots")
    # through the pipeline a bad mix is refused before anything is read or calibrated
    with pytest.raises(GolfError, match="lookup_mix") as e:
        fitpack.compress_with_hessians(
            "no/such.safetensors", "out.golf", scheme_spec=None, codec="zstd", tokenizer=None,
            config_path=None, code_files=(), code_mode="raw", budget=16_000_000,
            allow_over=False, force=False, progress=False, calib="self", lookup_mix="lots")
    assert e.value.params == ("lookup_mix",)
