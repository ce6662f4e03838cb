"""Banked parameters: one 3-D tensor holding a matrix per layer (the records' `qo_bank`,
`kv_bank`, `mlp_up_bank`, `mlp_down_bank`, [L, rows, cols]).

A bank is quantized as its L matrices, not as one [L, rows*cols] block: before quantizing,
every float 3-D tensor is split into slices named `bank[i]` (2-D, so each gets per-row
scales, its own GPTQ Hessian where calibration provides one, its own line in `inspect`, and
its own rules: `qo_bank[3]=int8` names one slice, `qo_bank*` all of them). Reading an
artifact stacks the slices back into the bank. `[` never appears in a PyTorch parameter
name, so a slice name cannot collide with a real tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from golfpack.errors import GolfError
from golfpack.format.layout import parse_slice, slice_name


def is_bank(t: torch.Tensor) -> bool:
    return t.ndim == 3 and t.is_floating_point()


def split_banks(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every float 3-D tensor -> its slices `name[i]` (views), in place of the bank."""
    out = {}
    for name, t in state.items():
        if parse_slice(name) is not None:
            raise GolfError(f"tensor name {name!r} looks like a bank slice; rename it")
        if is_bank(t):
            for i in range(t.shape[0]):
                out[slice_name(name, i)] = t[i]
        else:
            out[name] = t
    return out


def join_banks(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack slices `name[0..L-1]` back into `name` [L, rows, cols] (order of first slice)."""
    groups: dict[str, dict[int, torch.Tensor]] = {}
    for name, t in state.items():
        p = parse_slice(name)
        if p is not None:
            if p[0] in state or p[1] in groups.setdefault(p[0], {}):
                raise GolfError(f"bank {p[0]!r}: slice {p[1]} given twice or a tensor of "
                                "that name too")
            groups[p[0]][p[1]] = t
    if not groups:
        return dict(state)
    out = {}
    for name, t in state.items():
        p = parse_slice(name)
        if p is None:
            out[name] = t
            continue
        bank, _ = p
        if bank in out:
            continue
        parts = groups[bank]
        if sorted(parts) != list(range(len(parts))):
            raise GolfError(f"bank {bank!r}: slices {sorted(parts)[:6]} are not 0..L-1")
        shapes = {tuple(v.shape) for v in parts.values()}
        dtypes = {v.dtype for v in parts.values()}
        if len(shapes) != 1 or len(dtypes) != 1:
            raise GolfError(f"bank {bank!r}: slices differ in shape or dtype")
        out[bank] = torch.stack([parts[i] for i in range(len(parts))])
    return out
