"""Parameter counts of a training config without training: the model is built on the meta
device (shapes only, no memory, no initialisation work), then counted per family."""

from __future__ import annotations

from trainer.config import ConfigError, TrainConfig
from trainer.model import CONTROL_PATTERNS, GPT

FAMILIES = ("embed", "head", "attn", "mlp", "control", "other")


def family(name: str) -> str:
    """embed (token embedding), head (an untied output head), attn / mlp (block matrices),
    control (gains, scales, mixes, gates, skip and lane weights), other."""
    if name.startswith("tok_emb"):
        return "embed"
    if name.startswith("lm_head"):
        return "head"
    if any(c in name for c in CONTROL_PATTERNS):
        return "control"
    if ".attn." in name:
        return "attn"
    if ".mlp." in name:
        return "mlp"
    return "other"


def build_meta_model(cfg: TrainConfig) -> GPT:
    import torch

    if cfg.vocab_size <= 0:
        raise ConfigError("vocab_size 0 takes the tokenizer's size at training time; set "
                          "vocab_size to count parameters")
    with torch.device("meta"):
        return GPT(cfg.model_config())


def count_params(cfg: TrainConfig) -> dict:
    """{"total": N, "families": {family: N}, "tensors": T} for the config's model."""
    model = build_meta_model(cfg)
    fams = dict.fromkeys(FAMILIES, 0)
    n = 0
    for name, p in model.named_parameters():
        fams[family(name)] += p.numel()
        n += 1
    return {"total": sum(fams.values()), "families": {k: v for k, v in fams.items() if v},
            "tensors": n}
