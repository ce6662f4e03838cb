"""Load the model to score: a .golf artifact (dequantized through golfpack), a challenge
`.ptz` artifact (golfpack.foreign.ptz), a checkpoint (golfpack.checkpoint), or any of them
with the architecture named by the user (`model_spec`: "module:factory" or
"PATH/train_gpt.py:GPT").

golfeval never imports the trainer: models are rebuilt by golfpack.checkpoint.build_model.
An arch a file names is imported only when it is on golfpack's allow-list, or when the user
trusts the file (`trust_arch`); a model the user names is always built. Models that do not
offer golf's hidden()/logits() are wrapped per golfeval.score.adapter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

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
    notes: list[str] = field(default_factory=list)  # inferred / ignored / foreign format
    protocol: str = "hidden+head"        # golfeval.score.adapter


def load_model(artifact=None, checkpoint=None, model_spec: str | None = None,
               config=None, device="cpu", trust_arch: bool = False) -> LoadedModel:
    """Exactly one of `artifact` / `checkpoint`. `config` (dict or JSON path) is for plain
    torch.save state dicts, which carry none (else the baseline architecture is inferred);
    `model_spec` names the model to build instead of the file's arch."""
    from golfeval.score.adapter import as_scorable, protocol_of
    from golfpack.checkpoint import DEFAULT_ARCH, build_model, load_with_notes
    from golfpack.foreign.ptz import looks_like_ptz

    if (artifact is None) == (checkpoint is None):
        raise GolfError("give exactly one of `artifact` or `checkpoint`",
                        param=("artifact", "checkpoint"))
    if model_spec is not None and ":" not in model_spec:
        raise GolfError(f"`model_spec={model_spec!r}` must look like 'module:factory' or "
                        "'PATH/train_gpt.py:GPT'", param="model_spec")
    tok_hash, tok_vocab, notes = None, None, []
    if artifact is not None:
        path, source = os.fspath(artifact), "artifact"
        if not os.path.isfile(path):
            raise GolfError(f"{path}: no such artifact file")
        if _is_golf(path) or not looks_like_ptz(path):  # golf's reader names what is wrong
            art = _load_artifact(path)
            state, cfg = art.state_dict(), dict(art.config)
            tok_hash = getattr(art, "tokenizer_sha256", None)
            tok_vocab = getattr(art, "vocab_size", None)
        else:
            state, cfg, notes = _load_foreign(path, config, model_spec)
    else:
        state, cfg, notes = load_with_notes(checkpoint, config, infer=model_spec is None)
        path, source = os.fspath(checkpoint), "checkpoint"
    arch = model_spec or cfg.get("arch", DEFAULT_ARCH)
    model = build_model(cfg, {k: v for k, v in state.items()}, arch=model_spec,
                        trust=trust_arch, notes=notes)
    proto = protocol_of(model)
    model = as_scorable(model)
    model.eval().requires_grad_(False).to(device)
    return LoadedModel(model, cfg, source, path, arch, model_vocab_size(model, cfg), tok_hash,
                       tok_vocab, notes, proto)


def _is_golf(path) -> bool:
    from golfpack.format.layout import MAGIC

    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def _load_foreign(path, config, model_spec):
    """A challenge .ptz -> (state, config, notes); the config is inferred for the baseline."""
    from golfpack.checkpoint import _resolve_config
    from golfpack.foreign.infer import infer_baseline_config
    from golfpack.foreign.ptz import load_ptz

    fw = load_ptz(path)
    bits = sorted(set(fw.quantized.values()))
    notes = [f"{path}: {fw.layout} .ptz ({fw.compression}"
             + (", byte-shuffled" if fw.shuffled else "") + f"), {len(fw.quantized)} "
             f"quantized tensors ({', '.join(bits) or 'none'}), dequantized as its own "
             "loader does"]
    if config is not None:
        return fw.state_dict, _resolve_config(config), notes
    if model_spec is not None:
        return fw.state_dict, {}, notes
    cfg, more = infer_baseline_config(fw.state_dict, path)
    return fw.state_dict, cfg, notes + more


def _load_artifact(path):
    from golfpack.artifact import load_artifact

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
                       device="cpu", tokenizer, force=False, warn=None, action="score",
                       trust_arch=False):
    """The one loader behind `score` and `audit`: the model, refused (or, with `force`,
    warned about) when the artifact records another tokenizer, and refused when its head is
    smaller than the tokenizer's vocabulary. Returns (LoadedModel, tokenizer sha256, vocab)."""
    from golfeval.data.tokenizer import file_sha256, load

    tok_sha, tok_vocab = file_sha256(tokenizer), load(tokenizer).vocab_size()
    loaded = load_model(artifact, checkpoint, model_spec, config, device, trust_arch)
    if loaded.tokenizer_sha256 and loaded.tokenizer_sha256 != tok_sha:
        msg = (f"{loaded.path} was made with tokenizer sha256 "
               f"{loaded.tokenizer_sha256[:16]}... ({loaded.tokenizer_vocab} pieces), "
               f"{tokenizer} is {tok_sha[:16]}... ({tok_vocab} pieces)")
        if not force:
            raise GolfError(f"{msg}; pass `force=True` to {action} anyway", param="force")
        if warn is not None:
            warn(msg)
    if loaded.vocab_size < tok_vocab:
        raise GolfError(f"model vocab {loaded.vocab_size} is smaller than the "
                        f"tokenizer's {tok_vocab}")
    return loaded, tok_sha, tok_vocab
