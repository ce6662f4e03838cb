"""GPTQ for bank slices: Hessians caught at F.linear / matmul equal the nn.Linear hooks' of an
unbanked twin with the same weights, GPTQ gives the same codes, the CLI compresses a banked
script end to end, and uses it cannot attribute are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from golfpack.errors import GolfError
from golfpack.hessian import bankcalib, calib, gptq

SCRIPT = Path(__file__).resolve().parent / "scripts" / "banked_gpt.py"
HP = dict(vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)
SPEC = "@control=fp32;tok_emb*=int8;*=int6"

pytestmark = pytest.mark.usefixtures("one_thread")


def _banked(seed=0):
    from golfpack.foreign.script import build_from_script

    torch.manual_seed(seed)
    model, _, _ = build_from_script(f"{SCRIPT}:GPT", HP)
    with torch.no_grad():
        model.tok_emb.weight.normal_(0, 0.5)
    return model.eval()


class _UBlock(nn.Module):
    def __init__(self, blk, ws):
        super().__init__()
        self.attn_scale = nn.Parameter(blk.attn_scale.detach().clone())
        self.mlp_scale = nn.Parameter(blk.mlp_scale.detach().clone())
        for name, w in zip(("c_q", "c_k", "c_v", "proj", "fc", "down"), ws, strict=True):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight.data.copy_(w)
            setattr(self, name, lin)

    def forward(self, x, heads, kv_heads):
        b, t, d = x.shape
        hd = d // heads
        h = F.rms_norm(x, (d,))
        q = self.c_q(h).view(b, t, heads, hd).transpose(1, 2)
        k = self.c_k(h).view(b, t, kv_heads, hd).transpose(1, 2)
        v = self.c_v(h).view(b, t, kv_heads, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.attn_scale * self.proj(y.transpose(1, 2).reshape(b, t, d))
        u = F.relu(self.fc(F.rms_norm(x, (d,)))).square()
        return x + self.mlp_scale * self.down(u)


class Unbanked(nn.Module):
    """The banked script's math with one nn.Linear per slice (same weights)."""

    def __init__(self, m):
        super().__init__()
        n = m.num_layers
        self.heads, self.kv_heads = m.heads, m.kv_heads
        self.blocks = nn.ModuleList([_UBlock(m.blocks[i], (
            m.qo_bank[i], m.kv_bank[i], m.kv_bank[n + i], m.qo_bank[n + i], m.mlp_up_bank[i],
            m.mlp_down_bank[i])) for i in range(n)])
        self.tok_emb = m.tok_emb

    def hidden(self, idx):
        x = self.tok_emb(idx)
        for blk in self.blocks:
            x = blk(x, self.heads, self.kv_heads)
        return F.rms_norm(x, (x.size(-1),))

    def logits(self, h):
        return F.linear(h, self.tok_emb.weight)

    def forward(self, idx):
        return self.logits(self.hidden(idx))


def _twin_names(n):
    """slice name -> the unbanked twin's weight name."""
    out = {"tok_emb.weight": "tok_emb.weight"}
    for i in range(n):
        p = f"blocks.{i}."
        out.update({f"qo_bank[{i}]": p + "c_q.weight", f"qo_bank[{n + i}]": p + "proj.weight",
                    f"kv_bank[{i}]": p + "c_k.weight", f"kv_bank[{n + i}]": p + "c_v.weight",
                    f"mlp_up_bank[{i}]": p + "fc.weight",
                    f"mlp_down_bank[{i}]": p + "down.weight"})
    return out


def _batches(k=3, rows=2, t=16):
    return [torch.randint(0, 64, (rows, t), generator=torch.Generator().manual_seed(i))
            for i in range(k)]


@pytest.fixture(scope="module")
def pair():
    m = _banked()
    twin = Unbanked(m).eval()
    with torch.no_grad():  # the twin computes what the banked model computes
        torch.testing.assert_close(twin(_batches(1)[0]), m.forward_logits(_batches(1)[0]))
    b = _batches()
    return m, twin, bankcalib.collect_bank_hessians(m, b), calib.collect_hessians(twin, b)


def test_slice_hessians_equal_the_unbanked_twins(pair):
    m, _, hb, hu = pair
    names = _twin_names(m.num_layers)
    assert set(hb.names()) == set(names) and not hb.left_out
    for s, u in names.items():
        torch.testing.assert_close(hb[s], hu[u], rtol=1e-12, atol=1e-12)
        assert hb.n_tokens[s] == hu.n_tokens[u] == 3 * 2 * 16
        assert hb[s].dtype == torch.float64
    # q, k and v of a layer read one tensor: one H object, grouped as the twin's are
    assert hb["qo_bank[0]"] is hb["kv_bank[0]"] is hb["kv_bank[2]"]
    assert {"qo_bank[0]", "kv_bank[0]", "kv_bank[2]"} in [set(g) for g in hb.groups]
    assert sorted(len(g) for g in hb.groups) == sorted(len(g) for g in hu.groups)


def test_gptq_codes_equal_the_unbanked_twins(pair):
    m, twin, hb, hu = pair
    qb, rb = gptq.quantize_model(m.state_dict(), hb, SPEC)
    qu, _ = gptq.quantize_model(twin.state_dict(), hu, SPEC)
    names = _twin_names(m.num_layers)
    assert rb["gptq_tensors"] == len(names) and not rb["fallbacks"]
    for s, u in names.items():
        eb, eu = qb[s], qu[u]
        assert eb.stats["gptq"] and eb.scheme == eu.scheme
        assert (eb.parts["codes"].data == eu.parts["codes"].data).all(), s
        assert (eb.parts["scales"].data == eu.parts["scales"].data).all(), s
    # GPTQ beats plain rounding on every slice in the Hessian metric
    assert all(rb["hessian_err"][s] <= rb["hessian_err_round"][s] for s in names)


class _Toy(nn.Module):
    """One bank [2, 8, 6] used as `how` says."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.bank = nn.Parameter(torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(0)))
        self.emb = nn.Embedding(10, 6)

    def forward(self, idx):
        x = self.emb(idx)
        b, how = self.bank, self.how
        if how == "split":  # one slice as two row ranges reading one input (fused q|k)
            return torch.cat([F.linear(x, b[0][:3]), F.linear(x, b[0][3:])], -1)
        if how == "split-diff":
            return F.linear(x, b[0][:3]).sum() + F.linear(x * 2, b[0][3:]).sum()
        if how == "copies":  # casts, transposed copies, matmul on either side
            y = F.linear(x, b[0].to(torch.float64).float())
            z = (x + 1) @ b[1].T.contiguous()
            return y + (b[1] @ (x + 1).transpose(-1, -2)).transpose(-1, -2) + z
        if how == "transposed":
            return F.linear(x, b[0]) @ b[1]  # bank[1]'s stored rows are the inputs
        if how == "arith":
            return F.linear(x, b[0] * 2)
        if how == "cols":
            return F.linear(x[..., :3], b[0][:, :3])
        if how == "whole":
            return torch.bmm(x[:2].new_ones(2, 4, 8), b)
        raise AssertionError(how)


def _toy_hessians(how):
    idx = torch.randint(0, 10, (2, 5), generator=torch.Generator().manual_seed(1))
    m = _Toy(how)
    with torch.no_grad():
        x = m.emb(idx).reshape(-1, 6).double()
    return m, x, bankcalib.collect_bank_hessians(m, [idx])


def test_row_ranges_and_copies_are_attributed():
    _, x, hs = _toy_hessians("split")
    torch.testing.assert_close(hs["bank[0]"], x.T @ x, rtol=1e-6, atol=1e-6)  # fp32 products
    assert "bank[1]" not in hs
    _, x, hs = _toy_hessians("copies")
    torch.testing.assert_close(hs["bank[0]"], x.T @ x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hs["bank[1]"], 2 * (x + 1).T @ (x + 1), rtol=1e-6, atol=1e-5)
    assert hs.n_tokens["bank[1]"] == 2 * 10  # two uses of bank[1] per pass


def test_transposed_use_is_left_to_plain_rounding():
    _, _, hs = _toy_hessians("transposed")
    assert "bank[0]" in hs and "bank[1]" not in hs
    assert "transposed" in hs.left_out["bank[1]"]


@pytest.mark.parametrize("how,msg", [
    ("split-diff", "read different inputs"),
    ("arith", "computed from bank bank"),
    ("cols", "column range"),
    ("whole", "bmm reads bank bank"),
])
def test_unattributable_use_is_refused_in_one_line(how, msg):
    with pytest.raises(GolfError, match=msg) as e:
        _toy_hessians(how)
    assert "\n" not in str(e.value)


def test_banked_calibration_checks_shard_tokens_against_the_vocab(tmp_path):
    """A banked script model's train shards are read with its vocabulary: an id past it is
    a one-line calibration error, never an IndexError inside its embedding."""
    import numpy as np

    from golfpack.cli import main
    from golfpack.shards import shard_bytes

    torch.save(_banked(1).state_dict(), tmp_path / "final_model.pt")
    (tmp_path / "hp.json").write_text(json.dumps(HP))
    data = tmp_path / "data"
    data.mkdir()
    (data / "fineweb_train_000000.bin").write_bytes(shard_bytes(np.full(4096, 70, np.uint16)))
    r = CliRunner().invoke(main, [
        "compress", str(tmp_path / "final_model.pt"), "-o", str(tmp_path / "a.golf"),
        "--model", f"{SCRIPT}:GPT", "--config", str(tmp_path / "hp.json"), "--scheme", SPEC,
        "--gptq", "--calib", str(data), "--calib-batches", "1", "--calib-tokens", "32",
        "--calib-seq-len", "8", "--codec", "zstd", "--device", "cpu"])
    assert r.exit_code == 2, r.output
    assert "vocab size 64" in r.output and "Traceback" not in r.output


def test_compress_gptq_on_the_banked_script(tmp_path):
    from golfpack.artifact import load_artifact
    from golfpack.checkpoint import load
    from golfpack.cli import main
    from golfpack.foreign.script import build_from_script

    m = _banked(1)
    torch.save(m.state_dict(), tmp_path / "final_model.pt")
    (tmp_path / "hp.json").write_text(json.dumps(HP))
    art, out = tmp_path / "a.golf", tmp_path / "back.safetensors"
    r = CliRunner().invoke(main, [
        "compress", str(tmp_path / "final_model.pt"), "-o", str(art), "--model",
        f"{SCRIPT}:GPT", "--config", str(tmp_path / "hp.json"), "--scheme", SPEC, "--gptq",
        "--calib", "self", "--calib-batches", "2", "--calib-tokens", "32",
        "--calib-seq-len", "8", "--codec", "zstd", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    n_slices = 4 * 2 + 2 * 2  # qo, kv: 2L slots; up, down: L
    assert rep["gptq"]["tensors"] == n_slices + 1 and not rep["gptq"]["fallbacks"]
    # the artifact holds the codes of GPTQ with each slice's own Hessian (same calibration)
    from golfpack.hessian.pipeline import calibrate_checkpoint

    _, _, _, hs, _ = calibrate_checkpoint(tmp_path / "final_model.pt", str(tmp_path / "hp.json"),
                                          "self", 2, 32, 8, arch=f"{SCRIPT}:GPT")
    want, _ = gptq.quantize_model(m.state_dict(), hs, SPEC)
    qm = load_artifact(art).quantized_model()
    for bank in ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank"):
        for i in range(getattr(m, bank).shape[0]):
            e, w = qm[f"{bank}[{i}]"], want[f"{bank}[{i}]"]
            assert w.stats["gptq"] and e.shape == tuple(getattr(m, bank).shape[1:])
            assert (e.parts["codes"].data.reshape(e.shape) == w.parts["codes"].data).all()
    r = CliRunner().invoke(main, ["unpack", str(art), "-o", str(out)])
    assert r.exit_code == 0, r.output
    state, _ = load(out)
    own, _, _ = build_from_script(f"{SCRIPT}:GPT", HP)
    own.load_state_dict(state, strict=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == \
        {k: tuple(v.shape) for k, v in m.state_dict().items()}


REC_HP = dict(vocab_size=512, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2,
              mlp_mult=2.0, xsa_last_n=2, rope_dims=8, num_loops=1, loop_start=1, loop_end=2,
              parallel_start_layer=3, train_seq_len=32, eval_seq_len=32)


@pytest.mark.slow
def test_slice_hessians_equal_the_records_own_collection():
    """The record's own collect_hessians (hooks on its attention/MLP modules, keyed by its
    per-layer export names) on its banked GPT, with depth recurrence and parallel lanes."""
    from tinymodels import record_banked_gpt

    from golfpack.foreign.records import BANK_PARTS

    mod, model, _ = record_banked_gpt(REC_HP)
    batches = [torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(i))
               for i in range(2)]

    class Loader:  # the record's loader interface: next_batch(tokens, accum) -> (x, y)
        def __init__(self):
            self.it = iter(batches)

        def next_batch(self, *_):
            x = next(self.it)
            return x, x

    h = type("H", (), {"train_batch_tokens": 64, "grad_accum_steps": 1})()
    theirs = mod.collect_hessians(model, Loader(), h, "cpu", n_calibration_batches=2)
    ours = bankcalib.collect_bank_hessians(model, batches)
    n = REC_HP["num_layers"]
    assert model.looping_active and len(ours.names()) == 6 * n + 1
    for bank, parts in BANK_PARTS.items():
        for half, part in enumerate(parts):
            for i in range(n):
                want = theirs[f"blocks.{i}.{part}"].double() * 2  # they divide by batches
                got = ours[f"{bank}[{half * n + i}]"]
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.max()))
    torch.testing.assert_close(ours["tok_emb.weight"], theirs["tok_emb.weight"].double() * 2,
                               rtol=1e-4, atol=1e-3)


def test_fit_allocates_per_bank_slice(tmp_path):
    """--fit on the banked script: every slice is a fitted tensor, the measured-Δloss probes
    (sensitivity family) write slices back into their banks (their α differ), the budget is
    tight enough that the allocation mixes options and lands in its window, the artifact
    unpacks."""
    from golfpack.artifact import load_artifact
    from golfpack.cli import main

    m = _banked(2)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    (tmp_path / "hp.json").write_text(json.dumps(HP))
    art = tmp_path / "f.golf"
    r = CliRunner().invoke(main, [
        "compress", str(tmp_path / "m.pt"), "-o", str(art), "--model", f"{SCRIPT}:GPT",
        "--config", str(tmp_path / "hp.json"), "--scheme", SPEC, "--fit", "--budget", "30000",
        "--fit-bits", "4,6", "--calib", "self", "--calib-batches", "2", "--calib-tokens", "32",
        "--calib-seq-len", "8", "--codec", "zstd", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    alloc = rep["fit"]["allocation"]
    assert set(_twin_names(m.num_layers)) == {a["name"] for a in alloc}
    assert 0.995 * 30000 <= rep["total_bytes"] <= 30000
    assert len({a["scheme"] for a in alloc}) > 1
    assert len({a["alpha"] for a in alloc}) > 1  # measured per family, slices put back
    back = load_artifact(art).state_dict()
    assert {k: tuple(v.shape) for k, v in back.items()} == \
        {k: tuple(v.shape) for k, v in m.state_dict().items()}
