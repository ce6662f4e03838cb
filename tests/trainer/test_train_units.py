"""Trainer pieces on their own: the token stream and its per-rank spans, train/val
separation, schedules, Muon, optimizer-state packing and checkpoint files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from golfeval.data.shards import ShardError, write_shard
from trainer import checkpointing as ckpt
from trainer.config import load_config
from trainer.data import BatchLoader, TokenStream, resolve_shards
from trainer.model import GPT, GPTConfig
from trainer.optim.groups import build_optimizers, lr_multiplier, muon_momentum, split_params
from trainer.optim.muon import Muon, assign_owners, newton_schulz

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def shard_dir(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(0, 100) % 50)
    write_shard(tmp_path / "fineweb_train_000001.bin", np.arange(100, 170) % 50)
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(30) % 50)
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.ones(30))
    return tmp_path


def test_stream_reads_across_shards_and_wraps(shard_dir):
    train, val = resolve_shards(shard_dir, "fineweb_train_*.bin", "fineweb_val_*.bin")
    assert [os.path.basename(p) for p in val] == ["fineweb_val_000000.bin"]  # no sidecar
    s = TokenStream(train, vocab_size=50)
    assert s.total == 170
    whole = np.concatenate([np.arange(0, 100), np.arange(100, 170)]) % 50
    assert np.array_equal(s.read(95, 10), whole[95:105])
    assert np.array_equal(s.read(165, 10), np.concatenate([whole[165:], whole[:5]]))
    with pytest.raises(ShardError, match="vocab size 40"):
        TokenStream(train, vocab_size=40).read(0, 60)


def test_spans_are_disjoint_and_independent_of_world_size(shard_dir):
    train, _ = resolve_shards(shard_dir, "fineweb_train_*.bin", "fineweb_val_*.bin")

    def spans(world, accum):
        seen = []
        for rank in range(world):
            s = TokenStream(train, 50)
            loader = BatchLoader(s, rank, world, accum, micro_seqs=2, seq_len=4,
                                 device=torch.device("cpu"))
            steps = [loader.next_step() for _ in range(3)]
            seen.append([[(x.tolist(), y.tolist()) for x, y in st] for st in steps])
        return seen

    one = spans(1, 4)      # 1 rank x 4 micro-steps
    four = spans(4, 1)     # 4 ranks x 1 micro-step: the same 4 spans per step
    two = spans(2, 2)
    for step in range(3):
        flat1 = one[0][step]
        flat4 = [four[r][step][0] for r in range(4)]
        flat2 = [two[r][step][m] for r in range(2) for m in range(2)]
        assert flat1 == flat4 == flat2
        for x, y in flat1:  # targets are the inputs shifted by one
            assert np.array_equal(np.array(x).ravel()[1:], np.array(y).ravel()[:-1])
    firsts = [np.array(x).ravel()[0] for x, _ in one[0][0]]
    assert len(set(firsts)) == 4  # disjoint spans start at different stream offsets


def test_training_refuses_validation_shards(shard_dir):
    with pytest.raises(ShardError, match="val shard but train shards were asked for"):
        resolve_shards(shard_dir, "fineweb_val_*.bin", "fineweb_val_*.bin")
    with pytest.raises(ShardError, match="train shard but val shards were asked for"):
        resolve_shards(shard_dir, "fineweb_train_*.bin", "fineweb_*.bin")
    with pytest.raises(ShardError, match="val shard but train shards"):
        resolve_shards(shard_dir, "*.bin", "fineweb_val_*.bin")
    # the same file under a train name (a link) is still refused
    os.symlink(shard_dir / "fineweb_val_000000.bin", shard_dir / "fineweb_train_000002.bin")
    with pytest.raises(ShardError, match="matched by both"):
        resolve_shards(shard_dir, "fineweb_train_*.bin", "fineweb_val_*.bin")
    with pytest.raises(ShardError, match="no such data directory"):
        resolve_shards(shard_dir / "nope", "a", "b")


def test_lr_multiplier_iterations_and_wallclock():
    cfg = load_config("tiny", ["iterations=100", "warmdown_iters=20"])
    assert lr_multiplier(cfg, 0, 0) == 1.0 and lr_multiplier(cfg, 80, 0) == 1.0
    assert lr_multiplier(cfg, 90, 0) == pytest.approx(0.5) and lr_multiplier(cfg, 100, 0) == 0
    cap = load_config("tiny", ["iterations=100000", "warmdown_iters=100",
                               "max_wallclock_seconds=10"])
    # 10 ms per step: warmdown covers the last 100 x 10 ms = 1 s of the 10 s budget
    assert lr_multiplier(cap, 800, 8000.0) == 1.0
    assert lr_multiplier(cap, 950, 9500.0) == pytest.approx(0.5)
    assert lr_multiplier(cap, 1000, 10000.0) == 0.0
    assert muon_momentum(cfg, 0) == pytest.approx(0.85)
    assert muon_momentum(cfg, 50) == pytest.approx(0.90)
    assert muon_momentum(cfg, 10_000) == pytest.approx(0.95)


def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    for shape in ((64, 32), (32, 64)):
        g = torch.randn(*shape)
        s = torch.linalg.svdvals(newton_schulz(g, steps=5))
        assert s.min() > 0.5 and s.max() < 1.3  # the quintic's band around 1
    assert sorted(assign_owners([torch.Size((8, 8))] * 4, 2)) == [0, 0, 1, 1]


def test_param_split_and_muon_step():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=4,
                          num_kv_heads=2))
    split = split_params(model)
    assert [n for n, _ in split.embed] == ["tok_emb.weight"]
    assert all(p.dim() == 2 for _, p in split.matrix)
    scalar_names = [n for n, _ in split.scalar]
    assert "skip_weights" in scalar_names and any("resid_mix" in n for n in scalar_names)
    assert len(split.matrix) == 2 * 6
    cfg = load_config("tiny")
    opts = build_optimizers(model, cfg, torch.device("cpu"))
    assert [type(o).__name__ for o in opts.opts] == ["AdamW", "AdamW", "Muon"]
    before = model.blocks[0].mlp.proj.weight.detach().clone()  # fc gets no grad yet
    x = torch.randint(0, 64, (2, 16))
    model.loss(x[:, :-1], x[:, 1:]).backward()
    opts.step()
    assert not torch.equal(before, model.blocks[0].mlp.proj.weight)
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def test_optimizer_state_round_trips_through_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=4,
                          num_kv_heads=2))
    opts = build_optimizers(model, load_config("tiny"), torch.device("cpu"))
    x = torch.randint(0, 64, (2, 16))
    model.loss(x[:, :-1], x[:, 1:]).backward()
    opts.step()
    tensors, meta = ckpt.pack_optimizers(opts.state_dicts(), opts.names)
    path = ckpt.save_state(tmp_path, 5, tensors, {"optim": meta}, keep=2)
    loaded, body = ckpt.load_state(path)
    restored = ckpt.unpack_optimizers(loaded, body["optim"], opts.names)
    for want, got in zip(opts.state_dicts(), restored, strict=True):
        assert want["state"].keys() == got["state"].keys()
        for k in want["state"]:
            for key, v in want["state"][k].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(got["state"][k][key]))
    # keep=2: older files are pruned; a damaged newest file falls back to the previous one
    for step in (6, 7):
        ckpt.save_state(tmp_path, step, tensors, {"optim": meta}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [6, 7]
    newest = ckpt.checkpoint_path(tmp_path, 7)
    with open(newest, "r+b") as fh:
        fh.truncate(100)
    path, _, body, skipped = ckpt.latest_state(tmp_path)
    assert body["step"] == 6 and len(skipped) == 1 and "step_0000007" in skipped[0]


def test_ema_warmup_sheds_the_initialisation():
    """A constant-decay EMA keeps d^t of the init (0.997^120 = 70% after a 120-step run);
    with warmup the init's share is gone and the decay reaches d at t = (10d - 1)/(1 - d)."""
    from trainer.optim.ema import EMA

    model = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    plain, warm = EMA(model, 0.997, warmup=False), EMA(model, 0.997)
    with torch.no_grad():
        model.weight.zero_()  # every later weight is 0: the shadow is the init's share
    for t in range(120):
        plain.update(t)
        warm.update(t)
    assert plain.state_dict()["weight"][0, 0].item() == pytest.approx(0.997 ** 120, rel=1e-5)
    assert warm.state_dict()["weight"][0, 0].item() < 1e-9
    assert warm.decay_at(0) == pytest.approx(0.1) and warm.decay_at(2989) < 0.997
    assert warm.decay_at(2990) == warm.decay_at(10**6) == 0.997 == plain.decay_at(0)
