"""Calibration: H = Σ xᵀx of every linear layer's input, gathered with forward hooks.

GPTQ and the fit-to-budget search weigh a weight error Δw of a layer y = W x by the
layer's input second moment: the output error over the calibration tokens is
Σ_rows Δw_r H Δw_rᵀ. H is collected here for every `nn.Linear` (keyed by its weight's
state-dict name) and for the tied embedding, whose head input is the final-norm output
(keyed "tok_emb.weight"). Layers that read the same input tensor (attention q/k/v) share
one H object, so the O(n·d²) product is paid once and GPTQ can factor it once.

The tied embedding has a second role the head H misses: its rows are also looked up as the
model's input. `lookup_curvature` measures that role's curvature G = Σ g gᵀ of the loss
gradient g at the embedding output (one backward pass per batch), rescaled into the head
H's units, so that GPTQ can weigh the embedding by H_head + λ·G (pipeline.apply_lookup_mix).

Calibration tokens come from train shards (validation data is refused) or from the model
itself (temperature 0.8, each sequence starting at BOS).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from golfpack.errors import GolfError
from golfpack.hessian.shardread import load_train_tokens

BOS_ID = 1
TIED_KEY = "tok_emb.weight"
# fp32 products over at most this many rows are summed in float64 (bounded rounding).
_CHUNK_ROWS = 4096


@dataclass
class Hessians:
    """Σ xᵀx per weight name (float64 [cols, cols]); shared inputs share one tensor."""

    H: dict[str, torch.Tensor]
    n_tokens: dict[str, int]
    source: str = ""
    seconds: float = 0.0
    groups: list[list[str]] = field(default_factory=list)  # names sharing one H, in order

    def __contains__(self, name: str) -> bool:
        return name in self.H

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.H[name]

    def names(self) -> list[str]:
        return list(self.H)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _autocast(device: torch.device, enabled: bool | None):
    """bf16 autocast on CUDA (how the model runs at evaluation); opt-in on CPU."""
    on = device.type == "cuda" if enabled is None else enabled
    if not on:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _has_tied_head(model: nn.Module) -> bool:
    emb = getattr(model, "tok_emb", None)
    return isinstance(emb, nn.Embedding) and callable(getattr(model, "logits", None))


class _Accumulator:
    """Adds xᵀx of each distinct input tensor to a float64 H (consecutive hooks that see
    the very same tensor, e.g. q/k/v, reuse the previous product)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.H: dict[str, torch.Tensor] = {}
        self.n: dict[str, int] = {}
        self.alias: dict[str, str] = {}  # name -> owner name of its shared H
        self._last: tuple[torch.Tensor, str] | None = None

    def add(self, name: str, x: torch.Tensor) -> None:
        shared = self._last[1] if self._last is not None and self._last[0] is x else None
        if shared is not None and shared != name:
            if self.alias.setdefault(name, shared) == shared and name not in self.H:
                return
            raise GolfError(f"calibration: {name} changed which layer it shares inputs with")
        if name in self.alias:
            raise GolfError(f"calibration: {name} stopped sharing its input with "
                            f"{self.alias[name]}")
        self._last = (x, name)
        x2 = x.detach().reshape(-1, x.shape[-1])
        acc = self.H.get(name)
        if acc is None:
            acc = self.H[name] = torch.zeros(x2.shape[1], x2.shape[1], dtype=torch.float64,
                                             device=self.device)
            self.n[name] = 0
        # CUDA: float64 products (fast enough there); CPU: float32 chunks summed in float64
        # (never in bf16: the products are outside any autocast the forward runs under).
        work = torch.float64 if x2.device.type == "cuda" else torch.float32
        with torch.autocast(x2.device.type, enabled=False):
            for i in range(0, x2.shape[0], _CHUNK_ROWS):
                c = x2[i:i + _CHUNK_ROWS].to(work)
                acc += (c.T @ c).to(torch.float64)
        self.n[name] += x2.shape[0]

    def reset_batch(self) -> None:
        self._last = None


def run_batches(model: nn.Module, batches, acc: _Accumulator, forward, autocast=None,
                progress: bool = False, grad: bool = False, desc: str = "calibrate") -> int:
    """The calibration loop every collector shares: eval mode, no grad (`grad`: with grad,
    for a backward pass), autocast where the device wants it, one `acc.reset_batch()` then
    `forward(batch)` per batch; the model's training mode is restored even on an error.
    -> the number of batches (at least one)."""
    from tqdm import tqdm

    device = _model_device(model)
    was_training = model.training
    model.eval()
    n_batches = 0
    try:
        with torch.enable_grad() if grad else torch.no_grad(), _autocast(device, autocast):
            for batch in tqdm(batches, desc=desc, unit="batch",
                              disable=None if progress else True):
                acc.reset_batch()
                forward(batch.to(device))
                n_batches += 1
    finally:
        model.train(was_training)
    if n_batches == 0:
        raise GolfError("calibration: no batches")
    return n_batches


def collect_hessians(model: nn.Module, batches, autocast: bool | None = None,
                     progress: bool = False, source: str = "") -> Hessians:
    """Run `batches` (LongTensor [B, T] each) through `model` and return H per weight."""
    import time

    device = _model_device(model)
    acc = _Accumulator(device)
    handles, linear_names = [], []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            key = f"{mod_name}.weight"
            linear_names.append(key)
            handles.append(mod.register_forward_pre_hook(
                lambda _m, args, key=key: acc.add(key, args[0])))
    tied = _has_tied_head(model)
    if tied:
        original = model.logits

        def logits_hook(h, *args, **kwargs):
            acc.add(TIED_KEY, h)
            return original(h, *args, **kwargs)

        model.logits = logits_hook  # instance attribute shadows the method; removed below
    if not linear_names and not tied:
        raise GolfError("calibration: the model has no nn.Linear layers and no tied head")
    t0 = time.perf_counter()
    try:
        run_batches(model, batches, acc, lambda b: model(b), autocast, progress)
    finally:
        for h in handles:
            h.remove()
        if tied:
            del model.logits
    owners = {k: v.cpu() for k, v in acc.H.items()}
    order = linear_names + ([TIED_KEY] if tied else [])
    # Keep the model's parameter order; layers the batches never reached are left out.
    H = {k: owners[acc.alias.get(k, k)] for k in order if acc.alias.get(k, k) in owners}
    groups: dict[str, list[str]] = {}
    for k in H:
        groups.setdefault(acc.alias.get(k, k), []).append(k)
    return Hessians(H=H, n_tokens={k: acc.n[acc.alias.get(k, k)] for k in H}, source=source,
                    seconds=time.perf_counter() - t0, groups=list(groups.values()))


@dataclass
class LookupCurvature:
    """The tied embedding's lookup-role curvature in the head H's units.

    G = Σ_t g_t g_tᵀ (g_t = ∂ Σ loss / ∂ emb(idx)_t, float64 [d, d]) is a loss curvature;
    the head H = Σ h hᵀ is an output-error metric whose loss curvature is about
    c·H, c = Σ_t (1 − ‖p_t‖²) ‖h_t‖² / Σ_t ‖h_t‖² (the trace of the softmax Hessian,
    per hidden-state energy). `G_head_units` = G / c, per token counted like the head H."""

    G: torch.Tensor  # Σ g gᵀ over the scored positions, float64
    head_scale: float  # c
    n_tokens: int  # positions whose gradient was summed
    seconds: float = 0.0

    def in_head_units(self, head_tokens: int) -> torch.Tensor:
        """G rescaled to the head H's units and token count."""
        return self.G * (head_tokens / max(1, self.n_tokens) / self.head_scale)


def lookup_curvature(model: nn.Module, batches, autocast: bool | None = None,
                     progress: bool = False) -> LookupCurvature:
    """Σ g gᵀ of the next-token loss gradient at the tied embedding's output, and the head
    scale c (see LookupCurvature), from one forward + backward per batch (the calibration
    loop and accumulator of the Hessians). Parameters get no gradients (they are frozen for
    the pass and restored)."""
    import time

    if not _has_tied_head(model):
        raise GolfError("lookup curvature needs a model with a tied embedding (tok_emb + logits)")
    device = _model_device(model)
    emb = model.tok_emb
    d = emb.embedding_dim
    acc = _Accumulator(device)
    outs: list[torch.Tensor] = []  # every lookup of this batch (a model may look up twice)
    sums = {"num": 0.0, "den": 0.0, "n": 0}

    def keep(_m, _args, out):
        out.requires_grad_(True)
        out.retain_grad()
        outs.append(out)
        return out

    original = model.logits
    seen = {}

    def logits_hook(h, *args, **kwargs):
        seen["h"] = h
        return original(h, *args, **kwargs)

    def forward(b):
        logits = model(b[:, :-1]).float()  # under the loop's autocast; the rest outside it
        with torch.autocast(device.type, enabled=False):
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum")
            loss.backward()
            acc.add("lookup", torch.cat([o.grad.detach().reshape(-1, d) for o in outs]))
            with torch.no_grad():
                p = torch.softmax(logits.detach().double(), dim=-1).reshape(-1, logits.shape[-1])
                e = seen["h"].detach().double().reshape(-1, d).pow(2).sum(-1)
                sums["num"] += float(((1.0 - p.pow(2).sum(-1)) * e).sum())
                sums["den"] += float(e.sum())
        sums["n"] += b[:, 1:].numel()
        outs.clear()

    grads = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in grads:
        p.requires_grad_(False)
    handle = emb.register_forward_hook(keep)
    model.logits = logits_hook
    t0 = time.perf_counter()
    try:
        run_batches(model, batches, acc, forward, autocast, progress, grad=True,
                    desc="lookup curvature")
    finally:
        handle.remove()
        del model.logits
        for p, req in grads:
            p.requires_grad_(req)
    num, den = sums["num"], sums["den"]
    scale = num / den if den > 0 and num > 0 else 1.0
    return LookupCurvature(acc.H["lookup"].cpu(), scale, sums["n"], time.perf_counter() - t0)


# --------------------------------------------------------------------------- tokens


def shard_batches(source, n_batches: int, batch_tokens: int, seq_len: int,
                  vocab_size: int | None = None) -> list[torch.Tensor]:
    """`n_batches` batches of `batch_tokens` tokens (rows of `seq_len`) from train shards."""
    rows = _rows_per_batch(batch_tokens, seq_len)
    tokens = load_train_tokens(source, n_batches * rows * seq_len, vocab_size)
    t = torch.from_numpy(tokens.astype(np.int64)).view(n_batches, rows, seq_len)
    return list(t.unbind(0))


def _rows_per_batch(batch_tokens: int, seq_len: int) -> int:
    if seq_len < 2 or batch_tokens < seq_len:
        raise GolfError(f"calibration batches of {batch_tokens} tokens cannot hold one "
                        f"sequence of {seq_len}")
    return batch_tokens // seq_len


def model_logits(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """The model's logits by its protocol: forward_logits (a `forward(x, y) -> loss` model,
    as the records' are), hidden+logits, or forward."""
    if callable(getattr(model, "forward_logits", None)):
        return model.forward_logits(idx)
    if callable(getattr(model, "hidden", None)) and callable(getattr(model, "logits", None)):
        return model.logits(model.hidden(idx))
    return model(idx)


def _next_token_logits(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    hidden, head = getattr(model, "hidden", None), getattr(model, "logits", None)
    if not callable(getattr(model, "forward_logits", None)) and callable(hidden) \
            and callable(head):
        return head(hidden(idx)[:, -1:])[:, -1].float()  # the head at the last position only
    return model_logits(model, idx)[:, -1].float()


def generate_batches(model: nn.Module, n_batches: int, batch_tokens: int, seq_len: int,
                     temperature: float = 0.8, seed: int = 0, bos_id: int = BOS_ID,
                     autocast: bool | None = None, progress: bool = False
                     ) -> list[torch.Tensor]:
    """Self-calibration text: sequences sampled from the model at `temperature`, each
    starting at BOS. Works for any model whose forward maps [B, T] ids to logits; the full
    prefix is recomputed each step (no KV cache), so cost grows with seq_len²."""
    from tqdm import tqdm

    if temperature <= 0:
        raise GolfError("self-calibration needs a temperature > 0")
    rows = _rows_per_batch(batch_tokens, seq_len)
    device = _model_device(model)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad(), _autocast(device, autocast):
            for _ in tqdm(range(n_batches), desc="generate", unit="batch",
                          disable=None if progress else True):
                idx = torch.full((rows, 1), bos_id, dtype=torch.long, device=device)
                for _step in range(seq_len - 1):
                    logits = _next_token_logits(model, idx).cpu()
                    probs = torch.softmax(logits / temperature, dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=gen)
                    idx = torch.cat([idx, nxt.to(device)], dim=1)
                out.append(idx.cpu())
    finally:
        model.train(was_training)
    return out


def calibration_batches(model: nn.Module, source, n_batches: int = 16,
                        batch_tokens: int = 16384, seq_len: int = 1024, seed: int = 0,
                        autocast: bool | None = None, progress: bool = False
                        ) -> tuple[list[torch.Tensor], str]:
    """Token batches from `source`: a train-shard directory/glob, or "self" (generated by
    the model) -> (batches, a label saying where they came from)."""
    if str(source) == "self":
        batches = generate_batches(model, n_batches, batch_tokens, seq_len, seed=seed,
                                   autocast=autocast, progress=progress)
        return batches, f"self-generated ({n_batches}x{batch_tokens} tokens, T=0.8, seed {seed})"
    vocab = getattr(getattr(model, "tok_emb", None), "num_embeddings", None)
    batches = shard_batches(source, n_batches, batch_tokens, seq_len, vocab)
    return batches, f"{source} ({n_batches}x{batch_tokens} tokens)"


def calibrate(model: nn.Module, source, n_batches: int = 16, batch_tokens: int = 16384,
              seq_len: int = 1024, seed: int = 0, autocast: bool | None = None,
              progress: bool = False) -> Hessians:
    """Hessians from `source`: a train-shard directory/glob, or "self" (generated text)."""
    batches, label = calibration_batches(model, source, n_batches, batch_tokens, seq_len, seed,
                                         autocast, progress)
    return collect_hessians(model, batches, autocast=autocast, progress=progress, source=label)
