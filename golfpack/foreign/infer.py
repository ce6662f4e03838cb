"""The challenge baseline's architecture, read back from the shapes of its state dict.

The baseline `final_model.pt` is a bare torch.save(state_dict): no config travels with it.
Its GPT is golf's `trainer.model:GPT` (same parameter names and math), so a config can be
inferred: vocab and width from tok_emb, layers from the block indices, heads from the
length of q_gain, KV heads from c_k's rows, the MLP multiple from mlp.fc's rows, an untied
head from lm_head. Values no shape holds (logit soft-cap, rotary base) take the baseline's
defaults, and the report says so.
"""

from __future__ import annotations

import re

import torch

from golfpack.errors import CheckpointError

ARCH = "trainer.model:GPT"
ASSUMED = {"logit_softcap": 30.0, "rope_base": 10000.0}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")
_PER_BLOCK = {
    "attn.c_q.weight": 2, "attn.c_k.weight": 2, "attn.c_v.weight": 2,
    "attn.proj.weight": 2, "attn.q_gain": 1, "mlp.fc.weight": 2, "mlp.proj.weight": 2,
    "attn_scale": 1, "mlp_scale": 1, "resid_mix": 2,
}
BANK_NAMES = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")


def infer_baseline_config(state: dict[str, torch.Tensor], where: str = "checkpoint"
                          ) -> tuple[dict, list[str]]:
    """-> (config for trainer.model:GPT, lines saying what was inferred or assumed).

    Raises CheckpointError naming what cannot be inferred (a missing tensor, a key the
    baseline does not have, a shape that disagrees)."""
    def need(cond, msg, param=None):
        if not cond:
            raise CheckpointError(f"{where}: cannot infer the baseline architecture: {msg}",
                                  param=param)

    banks = [b for b in BANK_NAMES if b in state]
    need(not banks, f"banked parameters ({', '.join(banks)}) belong to a record's own model; "
         "name it with `model_spec=PATH/train_gpt.py:GPT`", "model_spec")
    emb = state.get("tok_emb.weight")
    need(emb is not None and emb.ndim == 2, "no 2-D tok_emb.weight; pass `config`", "config")
    vocab, dim = (int(s) for s in emb.shape)
    layers = sorted({int(m.group(1)) for k in state if (m := _BLOCK_RE.match(k))})
    need(bool(layers), "no blocks.N.* tensors; pass `config`", "config")
    n = len(layers)
    need(layers == list(range(n)), f"block indices {layers[:8]} are not 0..{n - 1}")
    qg = state.get("blocks.0.attn.q_gain")
    need(qg is not None and qg.ndim == 1, "no blocks.0.attn.q_gain (heads come from its "
         "length); pass `config`", "config")
    heads = int(qg.numel())
    need(heads > 0 and dim % heads == 0, f"width {dim} is not divisible by {heads} heads")
    head_dim = dim // heads
    ck = state.get("blocks.0.attn.c_k.weight")
    need(ck is not None and ck.ndim == 2, "no blocks.0.attn.c_k.weight")
    need(int(ck.shape[0]) % head_dim == 0, f"c_k has {ck.shape[0]} rows, not a multiple of "
         f"the head dim {head_dim}")
    kv_heads = int(ck.shape[0]) // head_dim
    fc = state.get("blocks.0.mlp.fc.weight")
    need(fc is not None and fc.ndim == 2, "no blocks.0.mlp.fc.weight")
    hidden = int(fc.shape[0])
    mult = hidden / dim
    mlp_mult = int(mult) if mult == int(mult) else mult
    tied = "lm_head.weight" not in state
    skips = min(n // 2, n - n // 2)
    expect = {"tok_emb.weight": (vocab, dim), "skip_weights": (skips, dim)}
    if not tied:
        expect["lm_head.weight"] = (vocab, dim)
    shapes = {"attn.c_q.weight": (dim, dim), "attn.c_k.weight": (kv_heads * head_dim, dim),
              "attn.c_v.weight": (kv_heads * head_dim, dim), "attn.proj.weight": (dim, dim),
              "attn.q_gain": (heads,), "mlp.fc.weight": (hidden, dim),
              "mlp.proj.weight": (dim, hidden), "attn_scale": (dim,), "mlp_scale": (dim,),
              "resid_mix": (2, dim)}
    for i in range(n):
        for k, shp in shapes.items():
            expect[f"blocks.{i}.{k}"] = shp
    extra = sorted(set(state) - set(expect))
    need(not extra, f"tensors the baseline does not have: {', '.join(extra[:4])}"
         + (f" (+{len(extra) - 4} more)" if len(extra) > 4 else "")
         + "; pass `config` or `model_spec`", ("config", "model_spec"))
    missing = sorted(set(expect) - set(state))
    need(not missing, f"missing {', '.join(missing[:4])}")
    for k, shp in expect.items():
        need(tuple(state[k].shape) == shp, f"{k} has shape {tuple(state[k].shape)}, the "
             f"inferred architecture needs {shp}")
    config = {"arch": ARCH, "vocab_size": vocab, "num_layers": n, "model_dim": dim,
              "num_heads": heads, "num_kv_heads": kv_heads, "mlp_mult": mlp_mult,
              "tie_embeddings": tied, **ASSUMED}
    notes = [f"inferred the baseline GPT from the weights: {n} layers, dim {dim}, {heads} "
             f"heads (q_gain), {kv_heads} KV heads (c_k rows {kv_heads * head_dim}), MLP x"
             f"{mlp_mult} (fc rows {hidden}), vocab {vocab}, "
             f"{'tied embeddings' if tied else 'untied lm_head'}",
             "assumed (no tensor holds them): "
             + ", ".join(f"{k} {v:g}" for k, v in ASSUMED.items())]
    return config, notes
