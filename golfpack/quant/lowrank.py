"""LQER's stored form: a low-rank correction A·B with A as int2 codes under one fp16 scale and
B as int4 codes under one fp16 scale per group of 64 values along each row, its exact byte
count, and the decoder of an artifact's "lqer" entries. Fitting lives in golfpack.hessian.lqer; this
module is all a reader needs, so loading an artifact never pulls in the fitting code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from golfpack.errors import ArtifactError
from golfpack.format.layout import quant_bits
from golfpack.quant.rows import dequantize, fp16_scale_up

GROUP = 64
A_BITS, B_BITS = 2, 4


@dataclass
class LowRank:
    """Quantized factors: A ≈ a_codes·a_scale [rows, r], B ≈ b_codes·b_scales [r, cols]."""

    a_codes: torch.Tensor  # int8 [rows, r], values in [-1, 1]
    a_scale: torch.Tensor  # float16 [1]
    b_codes: torch.Tensor  # int8 [r, cols], values in [-7, 7]
    b_scales: torch.Tensor  # float16 [r, ceil(cols / 64)]
    err_before: float = 0.0
    err_after: float = 0.0

    @property
    def rank(self) -> int:
        return int(self.a_codes.shape[1])

    def nbytes(self) -> int:
        """Stored size: packed 2-bit A, packed 4-bit B, fp16 scales."""
        return lqer_bytes(self.a_codes.shape[0], self.b_codes.shape[1], self.rank)

    def correction(self) -> torch.Tensor:
        """A·B as float32 [rows, cols]."""
        a = self.a_codes.float() * self.a_scale.float()
        return a @ dequantize_groups(self.b_codes, self.b_scales)

    @property
    def gain(self) -> float:
        return self.err_before - self.err_after


def lqer_bytes(rows: int, cols: int, rank: int) -> int:
    groups = -(-cols // GROUP)
    return -(-rows * rank * A_BITS // 8) + 2 + -(-rank * cols * B_BITS // 8) + 2 * rank * groups


def quantize_groups(b: torch.Tensor, bits: int = B_BITS, group: int = GROUP):
    """Symmetric intN per group of `group` values along each row -> (codes, fp16 scales)."""
    qmax = (1 << (bits - 1)) - 1
    r, c = b.shape
    g = -(-c // group)
    pad = torch.zeros(r, g * group, dtype=torch.float32)
    pad[:, :c] = b
    blocks = pad.view(r, g, group)
    s = fp16_scale_up(blocks.abs().amax(dim=2) / qmax)
    div = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.round(blocks / div[..., None]).clamp(-qmax, qmax) * (s > 0)[..., None]
    return (q.view(r, -1)[:, :c] + 0.0).to(torch.int8), s.to(torch.float16)


def dequantize_groups(codes: torch.Tensor, scales: torch.Tensor, group: int = GROUP):
    r, c = codes.shape
    s = scales.float().repeat_interleave(group, dim=1)[:, :c]
    return codes.float() * s


# --------------------------------------------------------------------------- artifact entries
# An "lqer" entry holds a quant entry's parts (codes, scales: pooled with the family's plain
# entries) plus the factors: lr_a (int2 codes [rows, r]), lr_as (its fp16 scale), lr_b (int4
# codes [r, cols]) and lr_bs (fp16 group scales, r x ceil(cols / 64)).
KIND = "lqer"
PARTS = ("codes", "scales", "lr_a", "lr_as", "lr_b", "lr_bs")


def reconstruct_entry(e) -> torch.Tensor:
    """ŵ = codes·scales + (lr_a·lr_as)(lr_b·lr_bs), float32 in the entry's shape. Every size
    is checked first: a damaged table gives an ArtifactError, never another exception."""
    def arr(role):
        if role not in e.parts:
            raise ArtifactError(f"entry {e.name!r} ({KIND}) lacks part {role!r}")
        return np.ascontiguousarray(e.parts[role].data)

    rows = int(e.shape[0]) if len(e.shape) >= 1 else 1
    cols = int(np.prod(e.shape[1:], dtype=np.int64)) if len(e.shape) >= 2 else 0
    rank = e.meta.get("rank")
    bits = quant_bits(e.scheme)  # a reader needs the bit width only (as for quant entries)
    if not bits:
        raise ArtifactError(f"entry {e.name!r}: bad scheme {e.scheme!r}")
    qmax = (1 << (bits - 1)) - 1
    if len(e.shape) != 2 or not isinstance(rank, int) or not 1 <= rank <= min(rows, cols):
        raise ArtifactError(f"entry {e.name!r} ({KIND}): bad shape {list(e.shape)} or rank")
    groups = -(-cols // GROUP)
    want = {"codes": (rows * cols, 1, qmax), "scales": (rows, 2, None),
            "lr_a": (rows * rank, 1, 1), "lr_as": (1, 2, None),
            "lr_b": (rank * cols, 1, (1 << (B_BITS - 1)) - 1), "lr_bs": (rank * groups, 2, None)}
    got = {}
    for role, (n, size, lim) in want.items():
        a = arr(role)
        if a.size != n or a.dtype.itemsize != size:
            raise ArtifactError(f"entry {e.name!r} ({KIND}): part {role!r} does not match "
                                f"shape {list(e.shape)} and rank {rank}")
        if lim is not None and a.size and int(np.abs(a.astype(np.int16)).max()) > lim:
            raise ArtifactError(f"entry {e.name!r} ({KIND}): {role} codes exceed ±{lim}")
        got[role] = torch.from_numpy(a.copy())
    base = dequantize(got["codes"].view(torch.int8).reshape(rows, cols),
                      got["scales"].view(torch.float16))
    lr = LowRank(got["lr_a"].view(torch.int8).reshape(rows, rank),
                 got["lr_as"].view(torch.float16), got["lr_b"].view(torch.int8).reshape(rank, cols),
                 got["lr_bs"].view(torch.float16).reshape(rank, groups))
    return (base + lr.correction()).reshape(e.shape)
