"""Load the model to score: a .golf artifact (dequantized through golfpack), a checkpoint
(golfpack.checkpoint), or either with the architecture replaced by `--model module:factory`.

golfeval never imports the trainer: models are rebuilt from the config's `arch` string
(default "trainer.model:GPT") by golfpack.checkpoint.build_model, which imports it by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from golfpack.errors import GolfError


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: dict
    source: str                          # "artifact" or "checkpoint"
    path: str
    arch: str
    vocab_size: int                      # rows of the output head
    tokenizer_sha256: str | None = None  # recorded in artifacts; None for checkpoints
    tokenizer_vocab: int | None = None   # the recorded tokenizer's piece count (artifacts)


def load_model(artifact=None, checkpoint=None, model_spec: str | None = None,
               config=None, device="cpu") -> LoadedModel:
    """Exactly one of `artifact` / `checkpoint`. `config` (dict or JSON path) is for plain
    torch.save state dicts, which carry none; `model_spec` overrides the config's arch."""
    from golfpack.checkpoint import DEFAULT_ARCH, build_model
    from golfpack.checkpoint import load as load_checkpoint

    if (artifact is None) == (checkpoint is None):
        raise GolfError("give exactly one of --artifact or --checkpoint")
    if model_spec is not None and ":" not in model_spec:
        raise GolfError(f"--model {model_spec!r} must look like 'module:factory'")
    tok_hash = None
    if artifact is not None:
        art = _load_artifact(artifact)
        state, cfg = art.state_dict(), dict(art.config)
        tok_hash = getattr(art, "tokenizer_sha256", None)
        path, source = os.fspath(artifact), "artifact"
    else:
        state, cfg = load_checkpoint(checkpoint, config)
        path, source = os.fspath(checkpoint), "checkpoint"
    arch = model_spec or cfg.get("arch", DEFAULT_ARCH)
    model = build_model(cfg, state, arch=arch)
    model.eval().requires_grad_(False).to(device)
    tok_vocab = getattr(art, "vocab_size", None) if artifact is not None else None
    return LoadedModel(model, cfg, source, path, arch, model_vocab_size(model, cfg), tok_hash,
                       tok_vocab)


def _load_artifact(path):
    try:
        from golfpack.artifact import load_artifact
    except ImportError:
        raise GolfError("artifact scoring needs golfpack.artifact, which this install "
                        "lacks; score the checkpoint instead") from None
    if not os.path.isfile(path):
        raise GolfError(f"{path}: no such artifact file")
    return load_artifact(path)


def model_vocab_size(model: torch.nn.Module, config: dict | None = None) -> int:
    """The model's vocabulary: its config's vocab_size, else the output head's rows."""
    cfg = getattr(model, "config", None)
    for source in (cfg, config or {}):
        v = source.get("vocab_size") if isinstance(source, dict) else getattr(
            source, "vocab_size", None)
        if isinstance(v, int) and v > 0:
            return v
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        return int(model(torch.zeros(1, 1, dtype=torch.long, device=dev)).shape[-1])


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile the forward pieces the scorer calls (hidden, or the whole forward)."""
    if hasattr(model, "hidden"):
        model.hidden = torch.compile(model.hidden, dynamic=False)
    else:
        model.forward = torch.compile(model.forward, dynamic=False)
    return model


def load_for_tokenizer(*, artifact=None, checkpoint=None, model_spec=None, config=None,
                       device="cpu", tokenizer, force=False, warn=None, action="score"):
    """The one loader behind `score` and `audit`: the model, refused (or, with `force`,
    warned about) when the artifact records another tokenizer, and refused when its head is
    smaller than the tokenizer's vocabulary. Returns (LoadedModel, tokenizer sha256, vocab)."""
    from golfeval.data.tokenizer import file_sha256, load

    tok_sha, tok_vocab = file_sha256(tokenizer), load(tokenizer).vocab_size()
    loaded = load_model(artifact, checkpoint, model_spec, config, device)
    if loaded.tokenizer_sha256 and loaded.tokenizer_sha256 != tok_sha:
        msg = (f"{loaded.path} was made with tokenizer sha256 "
               f"{loaded.tokenizer_sha256[:16]}... ({loaded.tokenizer_vocab} pieces), "
               f"{tokenizer} is {tok_sha[:16]}... ({tok_vocab} pieces)")
        if not force:
            raise GolfError(f"{msg}; pass --force to {action} anyway")
        if warn is not None:
            warn(msg)
    if loaded.vocab_size < tok_vocab:
        raise GolfError(f"model vocab {loaded.vocab_size} is smaller than the "
                        f"tokenizer's {tok_vocab}")
    return loaded, tok_sha, tok_vocab
