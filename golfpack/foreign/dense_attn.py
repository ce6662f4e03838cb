"""FlashAttention-3's two entry points as dense PyTorch SDPA (CPU stand-ins, same math).

flash_attn_func(q, k, v, causal=True): q [B, T, H, D], k/v [B, T, Hkv, D] (grouped-query
heads when Hkv < H) -> [B, T, H, D]. flash_attn_varlen_func: packed sequences q [N, H, D]
split by cu_seqlens (int32 prefix offsets; trailing entries equal to N are padding), each
sequence attending causally to itself only: a block-diagonal causal mask over the N rows.
Only what the records call is supported (causal, window_size=(-1, -1), default scale).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(causal, window_size, softmax_scale=None):
    if not causal:
        raise NotImplementedError("the dense stand-in implements causal attention only")
    if tuple(window_size) != (-1, -1):
        raise NotImplementedError("the dense stand-in has no local (windowed) attention")
    if softmax_scale is not None:
        raise NotImplementedError("the dense stand-in uses the default 1/sqrt(D) scale")


def flash_attn_func(q, k, v, causal=False, window_size=(-1, -1), softmax_scale=None, **_kw):
    _check(causal, window_size, softmax_scale)
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
        enable_gqa=k.size(2) != q.size(2))
    return y.transpose(1, 2)


def varlen_mask(cu_seqlens: torch.Tensor, n: int, device) -> torch.Tensor:
    """Boolean [n, n]: row i sees column j when j <= i and both lie in one segment."""
    cu = cu_seqlens.to(device=device, dtype=torch.long)
    pos = torch.arange(n, device=device)
    seg = torch.searchsorted(cu, pos, right=True)  # segment id of each row
    causal = pos[None, :] <= pos[:, None]
    return causal & (seg[:, None] == seg[None, :])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                           max_seqlen_k=None, causal=False, window_size=(-1, -1),
                           softmax_scale=None, **_kw):
    _check(causal, window_size, softmax_scale)
    if cu_seqlens_k is not None and cu_seqlens_q is not None and not torch.equal(
            cu_seqlens_q, cu_seqlens_k):
        raise NotImplementedError("the dense stand-in needs cu_seqlens_q == cu_seqlens_k")
    n = q.size(0)
    mask = varlen_mask(cu_seqlens_q, n, q.device)
    y = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
        attn_mask=mask, enable_gqa=k.size(1) != q.size(1))
    return y[0].transpose(0, 1)
