"""Safe checkpoints: round trip with config, torch.save state dicts, refusing code pickles."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from golfpack import checkpoint
from golfpack.errors import CheckpointError
from trainer.model import GPT, GPTConfig


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2))


def test_round_trip_and_rebuild(tmp_path):
    m = _model()
    path = tmp_path / "ck.safetensors"
    checkpoint.save(path, m.state_dict(), m.config.to_dict())
    state, cfg = checkpoint.load(path)
    assert cfg["arch"] == "trainer.model:GPT" and cfg["model_dim"] == 32
    assert set(state) == set(m.state_dict())
    for k, v in m.state_dict().items():
        assert torch.equal(state[k], v)
    rebuilt = checkpoint.build_model(cfg, state)
    idx = torch.randint(0, 64, (1, 8))
    assert torch.equal(rebuilt(idx), m(idx))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp left behind


def test_plain_torch_save_infers_or_needs_config(tmp_path):
    m = _model()
    path = tmp_path / "ck.pt"
    torch.save(m.state_dict(), path)
    state, cfg, notes = checkpoint.load_with_notes(path)  # the baseline's shapes: inferred
    want = m.config.to_dict()
    assert {k: cfg[k] for k in ("num_layers", "model_dim", "num_heads", "num_kv_heads",
                                "vocab_size")} == {k: want[k] for k in ("num_layers",
                                "model_dim", "num_heads", "num_kv_heads", "vocab_size")}
    assert "inferred" in notes[0]
    torch.save({"w": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="cannot infer"):
        checkpoint.load(tmp_path / "other.pt")
    state, cfg = checkpoint.load(path, config=m.config.to_dict())
    assert torch.equal(state["tok_emb.weight"], m.tok_emb.weight)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_refuses_code_executing_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    torch.save({"w": _Evil()}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(CheckpointError, match="refused|not a readable"):
            checkpoint.load(p, config={})
    assert not (tmp_path / "pwned_marker").exists()


def test_corrupt_safetensors(tmp_path):
    m = _model()
    path = tmp_path / "ck.safetensors"
    checkpoint.save(path, m.state_dict(), m.config.to_dict())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nope.safetensors")


def test_build_model_rejects_bad_arch():
    with pytest.raises(CheckpointError, match="allow-list"):
        checkpoint.build_model({"arch": "nosuchmodule:Thing"})
    with pytest.raises(CheckpointError, match="cannot import"):
        checkpoint.build_model({}, arch="nosuchmodule:Thing")
