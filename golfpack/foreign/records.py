"""The records' banked models and their per-layer export names.

From 2026-03-23 the records keep one 3-D parameter per weight family, [slot, rows, cols]:
  qo_bank        slot i = layer i's attention c_q, slot n+i = its output proj
  kv_bank        slot i = layer i's c_k,          slot n+i = its c_v
  mlp_up_bank    slot i = layer i's mlp.fc
  mlp_down_bank  slot i = layer i's mlp.proj
Their `.ptz` artifacts store those matrices under the per-layer names (blocks.i.attn.c_q.weight
...); `rebank_like` stacks them back when the model to load has banks.
"""

from __future__ import annotations

import torch

from golfpack.errors import CheckpointError

# bank -> the per-layer names of its first and (for two-part banks) second half
BANK_PARTS = {
    "qo_bank": ("attn.c_q.weight", "attn.proj.weight"),
    "kv_bank": ("attn.c_k.weight", "attn.c_v.weight"),
    "mlp_up_bank": ("mlp.fc.weight",),
    "mlp_down_bank": ("mlp.proj.weight",),
}


def rebank_like(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
                ) -> dict[str, torch.Tensor]:
    """`state` with per-layer matrices stacked into the banks `own` (a model's state dict)
    has and `state` lacks; unchanged when there is nothing to stack."""
    todo = [b for b in BANK_PARTS if b in own and b not in state]
    if not todo:
        return state
    out = dict(state)
    for bank in todo:
        parts = BANK_PARTS[bank]
        slots = int(own[bank].shape[0])
        if slots % len(parts):
            raise CheckpointError(f"{bank} has {slots} slots, not a multiple of {len(parts)}")
        n = slots // len(parts)
        names = [f"blocks.{i}.{p}" for p in parts for i in range(n)]
        if not all(k in out for k in names):
            continue  # leave it to the caller's missing-key report
        out[bank] = torch.stack([out.pop(k) for k in names])
    return out
