"""Tiny reference models for tests: every path live (the zero-initialised projections get
noise too), seeded so that two calls build the same weights."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.model import GPT, GPTConfig

TINY = dict(vocab_size=512, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2)


def live_gpt(seed: int = 0, scale: float = 0.05, **overrides) -> tuple[GPT, GPTConfig]:
    """A GPT with `TINY` (updated by `overrides`) whose weights all carry seeded noise."""
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**TINY, **overrides})
    m = GPT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn_like(p))
    return m, cfg


def frozen_gpt(seed: int = 0, **overrides) -> GPT:
    """`live_gpt` in eval mode without gradients: what scoring and audits take."""
    return live_gpt(seed, **overrides)[0].eval().requires_grad_(False)


def saved_gpt(path, seed: int = 0, **overrides):
    """`live_gpt` written as a safe checkpoint (weights + config) at `path`; returns `path`."""
    from golfpack.checkpoint import save

    m, cfg = live_gpt(seed, **overrides)
    save(path, m.state_dict(), cfg.to_dict())
    return path


PHASED_RECORD = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / \
    "phased_ttt_2026-04-14" / "train_gpt.py"


def record_banked_gpt(hp: dict, scale: float = 0.05):
    """The banked April record's own GPT (imported from ../shared, never run as a script),
    built from `hp` with seeded noise on every weight -> (its module, the model, the
    hyperparameters it used). Skips the calling test when ../shared is absent."""
    import pytest

    from golfpack.foreign.script import build_from_script, import_script

    if not PHASED_RECORD.is_file():
        pytest.skip("../shared/reference/phased_ttt_2026-04-14/train_gpt.py is absent")
    mod = import_script(PHASED_RECORD)
    torch.manual_seed(0)
    model, used, _ = build_from_script(f"{PHASED_RECORD}:GPT", hp)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return mod, model, used
