"""Which optimizer owns which parameter, and the step-dependent schedules: the fraction of
training done (of the wall clock under a cap), the LR multiplier (warmdown by iterations or
by fraction, with a floor), the weight-decay taper and the Muon momentum warm-up."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.model import CONTROL_PATTERNS
from trainer.optim.muon import Muon

EMBED_NAME = "tok_emb.weight"


@dataclass
class ParamSplit:
    matrix: list[tuple[str, nn.Parameter]]   # Muon: 2-D block matrices
    embed: list[tuple[str, nn.Parameter]]    # Adam at embed_lr: the tied embedding
    scalar: list[tuple[str, nn.Parameter]]   # Adam at scalar_lr: vectors and control tensors


def split_params(model: nn.Module) -> ParamSplit:
    split = ParamSplit([], [], [])
    for name, p in model.named_parameters():
        if name == EMBED_NAME:
            split.embed.append((name, p))
        elif p.dim() == 2 and not any(c in name for c in CONTROL_PATTERNS):
            split.matrix.append((name, p))
        else:
            split.scalar.append((name, p))
    return split


@dataclass
class Optimizers:
    """The run's optimizers, each with the names of its parameters in order (checkpoints
    key optimizer state by parameter name, never by position alone)."""

    opts: list[torch.optim.Optimizer]
    names: list[list[str]]
    base_lrs: list[float]
    base_wds: list[float] = None

    def __post_init__(self):
        if self.base_wds is None:
            self.base_wds = [o.param_groups[0]["weight_decay"] for o in self.opts]

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.opts:
            o.step()

    def set_lr_multiplier(self, mult: float) -> None:
        for o, base in zip(self.opts, self.base_lrs, strict=True):
            for g in o.param_groups:
                g["lr"] = base * mult

    def set_wd_multiplier(self, mult: float) -> None:
        for o, base in zip(self.opts, self.base_wds, strict=True):
            for g in o.param_groups:
                g["weight_decay"] = base * mult

    def set_muon_momentum(self, momentum: float) -> None:
        for o in self.opts:
            if isinstance(o, Muon):
                for g in o.param_groups:
                    g["momentum"] = momentum

    def state_dicts(self) -> list[dict]:
        return [o.state_dict() for o in self.opts]

    def load_state_dicts(self, states: list[dict]) -> None:
        for o, s in zip(self.opts, states, strict=True):
            o.load_state_dict(s)


def build_optimizers(model: nn.Module, cfg: TrainConfig, device: torch.device) -> Optimizers:
    split = split_params(model)
    adam_kw = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    if device.type == "cuda":
        adam_kw["fused"] = True
    opts, names, lrs = [], [], []
    for group, lr, wd in ((split.embed, cfg.embed_lr, cfg.embed_wd),
                          (split.scalar, cfg.scalar_lr, cfg.adam_weight_decay)):
        if group:
            opts.append(torch.optim.AdamW([p for _, p in group], lr=lr, weight_decay=wd,
                                          **adam_kw))
            names.append([n for n, _ in group])
            lrs.append(lr)
    if split.matrix:
        opts.append(Muon([p for _, p in split.matrix], lr=cfg.matrix_lr,
                         momentum=cfg.muon_momentum, nesterov=cfg.muon_nesterov,
                         backend_steps=cfg.muon_backend_steps,
                         weight_decay=cfg.muon_weight_decay,
                         compile_ns=cfg.compile and device.type == "cuda",
                         ns=cfg.muon_ns, row_normalize=cfg.muon_row_normalize))
        names.append([n for n, _ in split.matrix])
        lrs.append(cfg.matrix_lr)
    return Optimizers(opts, names, lrs)


def train_cap_ms(cfg: TrainConfig) -> float:
    """Training's share of the wall clock in ms (the cap less the export's reserve); 0 = no
    cap."""
    if cfg.max_wallclock_seconds <= 0:
        return 0.0
    return 1000.0 * (cfg.max_wallclock_seconds - cfg.gptq_reserve_seconds)


def train_fraction(cfg: TrainConfig, step: int, elapsed_ms: float) -> float:
    """How much of training is done: elapsed / cap under a wall-clock cap, else
    step / iterations (the larger of the two when both bound the run)."""
    frac = step / cfg.iterations if cfg.iterations > 0 else 0.0
    cap = train_cap_ms(cfg)
    if cap > 0:
        frac = max(frac, elapsed_ms / cap)
    return min(frac, 1.0)


def lr_multiplier(cfg: TrainConfig, step: int, elapsed_ms: float) -> float:
    """1.0, then a linear decay towards 0, never below `min_lr`.

    With warmdown_frac > 0 the decay spans the last warmdown_frac of training
    (train_fraction: of the wall clock under a cap). Otherwise it spans the last
    warmdown_iters steps: of `iterations` without a cap; with a cap, also the last
    warmdown_iters x (mean step time so far) of the budget, because the cap, not
    `iterations`, ends the run. The smaller of the two applies.
    """
    if cfg.warmdown_frac > 0:
        frac = train_fraction(cfg, step, elapsed_ms)
        mult = min(1.0, (1.0 - frac) / cfg.warmdown_frac)
        return max(mult, cfg.min_lr)
    if cfg.warmdown_iters <= 0:
        return 1.0
    mult = 1.0
    if cfg.iterations > 0:
        mult = min(mult, max(0.0, (cfg.iterations - step) / cfg.warmdown_iters))
    cap_ms = train_cap_ms(cfg)
    if cap_ms > 0 and step > 0:
        step_ms = elapsed_ms / step
        warmdown_ms = cfg.warmdown_iters * step_ms
        remaining = max(cap_ms - elapsed_ms, 0.0)
        if remaining <= warmdown_ms:
            mult = min(mult, remaining / max(warmdown_ms, 1e-9))
    return max(mult, cfg.min_lr)


def wd_multiplier(cfg: TrainConfig, frac: float) -> float:
    """1.0 until wd_taper_start_frac of training, then linear to wd_taper_final_mult."""
    start = cfg.wd_taper_start_frac
    if frac <= start or start >= 1.0:
        return 1.0
    return 1.0 + (cfg.wd_taper_final_mult - 1.0) * min(1.0, (frac - start) / (1.0 - start))


def muon_momentum(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up from muon_momentum_warmup_start to muon_momentum."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
