"""Calibration for banked models: H = Σ xᵀx of every bank slice's input, caught at the product.

Banked models (the records since 2026-03-23) keep one 3-D parameter per weight family and
multiply by a slice of it inside forward (`F.linear(x, self.qo_bank[i])`), so no nn.Linear
hook sees those inputs. Here a TorchFunctionMode watches every F.linear and matmul of the
calibration passes; when the weight operand is a view of a registered parameter (found by its
storage, offset and strides) the input is added to that matrix's H, under the slice names of
golfpack.quant.banks (`qo_bank[3]`), or the parameter's own name for a 2-D weight (nn.Linear
layers, a tied head used as `F.linear(x, tok_emb.weight)`). Conventions are calib.Hessians':
float64 sums, products shared by names reading the very same input tensor.

Understood uses: a slice, or a range of its output rows (a fused matrix split into q and k);
casts and copies of one (`.to`, `.float()`, `.contiguous()`, ...) and their transposes; the
weight on either side of a matmul. A slice used transposed (`x @ bank[i]`: its stored rows are
the inputs) gets an H over its rows; GPTQ's per-row scales would then sit across its inputs,
so such slices are listed in `left_out` and keep plain rounding. A slice whose row ranges read
different inputs cannot share one H and is refused; so is any other op that reads a bank
during forward (a column range, a whole bank in one product, arithmetic on a slice), with a
one-line error naming the bank and the op: no slice silently misses its Hessian.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from golfpack.errors import GolfError
from golfpack.hessian.calib import (
    Hessians,
    _Accumulator,
    _model_device,
    model_logits,
    run_batches,
)
from golfpack.quant.banks import is_bank, slice_name

_COPIES = {torch.Tensor.to, torch.Tensor.float, torch.Tensor.bfloat16, torch.Tensor.half,
           torch.Tensor.double, torch.Tensor.type, torch.Tensor.type_as, torch.Tensor.contiguous,
           torch.Tensor.clone, torch.clone, torch.Tensor.detach, torch.detach}
_TRANSPOSES = {torch.Tensor.t, torch.t, torch.Tensor.transpose, torch.transpose}
_TRANSPOSE_PROPS = (torch.Tensor.T, torch.Tensor.mT)
_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm,
            torch.Tensor.mm}
# products whose operands cannot be told apart as weight and input: refused on a bank
_OTHER_PRODUCTS = {torch.bmm, torch.Tensor.bmm, torch.baddbmm, torch.Tensor.baddbmm,
                   torch.addmm, torch.Tensor.addmm, torch.einsum, torch.tensordot, torch.mv,
                   torch.Tensor.mv, torch.addmv, F.bilinear, F.conv1d, F.conv2d}


@dataclass
class BankHessians(Hessians):
    """calib.Hessians plus the matrices calibration reached but GPTQ cannot use (why)."""

    left_out: dict[str, str] = field(default_factory=dict)


def has_banks(model: nn.Module) -> bool:
    return any(is_bank(p) for p in model.parameters())


@dataclass(frozen=True)
class _Desc:
    """What a 2-D tensor is, in stored coordinates of matrix `name` ([rows, cols]): dim 0 is
    the stored rows (`rows_first`) or columns, over [a0, a1); dim 1 the other axis, [b0, b1)."""

    name: str
    rows: int
    cols: int
    rows_first: bool
    a: tuple[int, int]
    b: tuple[int, int]

    def transposed(self) -> _Desc:
        return _Desc(self.name, self.rows, self.cols, not self.rows_first, self.b, self.a)


class _Registry:
    """Float parameters by storage, to tell which matrix (and slice) a view reads."""

    def __init__(self, model: nn.Module):
        self.by_ptr: dict[int, list[tuple[str, torch.Tensor]]] = {}
        self.order: list[str] = []
        for pname, p in model.named_parameters():
            if not p.is_floating_point() or p.ndim not in (2, 3):
                continue
            self.by_ptr.setdefault(p.untyped_storage().data_ptr(), []).append((pname, p))
            self.order += [slice_name(pname, i) for i in range(p.shape[0])] if p.ndim == 3 \
                else [pname]
        self.tags: dict[int, tuple[weakref.ref, _Desc]] = {}  # copies of slices, per batch
        self.taints: dict[int, tuple[weakref.ref, str]] = {}  # computed from a bank alone

    def tainted(self, t) -> str | None:
        """The bank a weight-only computation (`bank[0] * 2`) was made from, if any."""
        got = self.taints.get(id(t)) if isinstance(t, torch.Tensor) else None
        return got[1] if got is not None and got[0]() is t else None

    def clear(self) -> None:
        self.tags.clear()
        self.taints.clear()

    def known(self, t: torch.Tensor) -> bool:
        """`t` reads a registered parameter's storage or is a tagged copy."""
        tag = self.tags.get(id(t))
        return (tag is not None and tag[0]() is t) or _ptr(t) in self.by_ptr

    def bank_of(self, t) -> str | None:
        """The bank (3-D parameter) whose storage `t` reads, if any."""
        if not isinstance(t, torch.Tensor):
            return None
        tag = self.tags.get(id(t))
        if tag is not None and tag[0]() is t:
            return tag[1].name if "[" in tag[1].name else None
        for pname, p in self.by_ptr.get(_ptr(t), ()):
            if p.ndim == 3:
                return pname
        return None

    def locate(self, t, op: str) -> _Desc | None:
        """The matrix a 2-D operand `t` is (a view or tagged copy), None for other tensors."""
        if not isinstance(t, torch.Tensor):
            return None
        tag = self.tags.get(id(t))
        if tag is not None and tag[0]() is t:
            return tag[1]
        cands = self.by_ptr.get(_ptr(t))
        if not cands:
            return None
        for pname, p in cands:
            if p.ndim == 3:
                L, R, C = p.shape
                delta = t.storage_offset() - p.storage_offset()
                if p.stride() != (R * C, C, 1):
                    raise GolfError(f"calibration: bank {pname} is not contiguous; its slices "
                                    "cannot be told apart")
            else:
                L, (R, C) = 1, p.shape
                delta = t.storage_offset() - p.storage_offset()
                if p.stride() != (C, 1):
                    continue
            if not 0 <= delta < L * R * C:
                continue
            if t.ndim != 2:
                raise GolfError(f"calibration: {op} reads {pname} as a {t.ndim}-D tensor; "
                                "only one 2-D slice per product can be attributed")
            i, off = divmod(delta, R * C)
            r0, c0 = divmod(off, C)
            name = slice_name(pname, i) if p.ndim == 3 else pname
            h, w = t.shape
            if t.stride() == (C, 1) or (h == 1 and t.stride()[1] == 1):
                d = _Desc(name, R, C, True, (r0, r0 + h), (c0, c0 + w))
            elif t.stride() == (1, C) or (w == 1 and t.stride()[0] == 1):
                d = _Desc(name, R, C, False, (c0, c0 + h), (r0, r0 + w))
            else:
                raise GolfError(f"calibration: {op} reads {name} through a strided view "
                                f"{tuple(t.stride())} that cannot be attributed")
            rr, cc = (d.a, d.b) if d.rows_first else (d.b, d.a)
            if rr[1] > R or cc[1] > C:
                raise GolfError(f"calibration: {op} reads across slices of {pname}")
            return d
        return None

    def tag(self, out, d: _Desc) -> None:
        self.tags[id(out)] = (weakref.ref(out), d)


def _ptr(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


def _func_name(func) -> str:
    return getattr(func, "__name__", None) or str(func)


class _Uses:
    """The output-row ranges and orientation each matrix was used with."""

    def __init__(self, acc: _Accumulator):
        self.acc = acc
        self.transposed: dict[str, bool] = {}
        self.ranges: dict[str, set[tuple[int, int]]] = {}
        self.full: dict[str, int] = {}

    def add(self, d: _Desc, x: torch.Tensor, op: str) -> None:
        # F.linear(x, t): dim 1 of t is the input axis, dim 0 the outputs
        n_in = d.cols if d.rows_first else d.rows
        n_out = d.rows if d.rows_first else d.cols
        if d.b != (0, n_in):
            raise GolfError(f"calibration: {op} reads only inputs {d.b[0]}:{d.b[1]} of "
                            f"{d.name} (of {n_in}); a column range cannot be attributed")
        if x.shape[-1] != n_in:
            raise GolfError(f"calibration: {op} feeds {x.shape[-1]} features to {d.name}, "
                            f"which takes {n_in}")
        if self.transposed.setdefault(d.name, not d.rows_first) != (not d.rows_first):
            raise GolfError(f"calibration: {d.name} is used both as stored and transposed")
        self.full[d.name] = n_out
        self.ranges.setdefault(d.name, set()).add(d.a)
        key = d.name if d.a == (0, n_out) else f"{d.name}#{d.a[0]}:{d.a[1]}"
        self.acc.add(key, x)


class _BankMode(TorchFunctionMode):
    """Routes F.linear / matmul inputs to their matrices; refuses unattributable bank use."""

    def __init__(self, reg: _Registry, uses: _Uses):
        super().__init__()
        self.reg, self.uses = reg, uses

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reg, name = self.reg, _func_name(func)
        if func is F.linear:
            x, w = args[0], args[1] if len(args) > 1 else kwargs.get("weight")
            if reg.bank_of(x):
                raise GolfError(f"calibration: linear takes bank {reg.bank_of(x)} as its input")
            _refuse_tainted(reg, w, "linear")
            d = reg.locate(w, "linear")
            if d is not None:
                self.uses.add(d, x, "linear")
            return func(*args, **kwargs)
        if func in _MATMULS and len(args) == 2 and not kwargs:
            a, b = args
            _refuse_tainted(reg, a, name)
            _refuse_tainted(reg, b, name)
            da, db = reg.locate(a, name), reg.locate(b, name)
            if da is not None and db is not None:
                raise GolfError(f"calibration: {name} multiplies {da.name} by {db.name}")
            if db is not None:  # x @ W == F.linear(x, Wᵀ)
                self.uses.add(db.transposed(), a, name)
            elif da is not None:  # W @ X: the columns of X are the inputs
                if b.ndim < 2:
                    raise GolfError(f"calibration: {name} multiplies {da.name} by a vector")
                self.uses.add(da, b.transpose(-1, -2), name)
            return func(*args, **kwargs)
        flat = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if func in _OTHER_PRODUCTS:
            bank = next((b for b in (reg.bank_of(t) or reg.tainted(t) for t in flat) if b), None)
            if bank is not None:
                raise GolfError(f"calibration: {name} reads bank {bank}; only F.linear and "
                                "matmul with one 2-D slice can be attributed")
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            return out
        src = next((t for t in flat if reg.known(t)), None)
        if src is None:
            return out
        prop = getattr(func, "__self__", None)
        if src.ndim == 2 and out.ndim == 2 and (
                func in _COPIES or func in _TRANSPOSES or any(prop is p for p in _TRANSPOSE_PROPS)):
            d = reg.locate(src, name)
            if d is not None:
                same = func in _COPIES and tuple(out.shape) == tuple(src.shape)
                reg.tag(out, d if same else d.transposed())
                return out
        banks = [(t, reg.bank_of(t) or reg.tainted(t)) for t in flat]
        t, bank = next(((t, b) for t, b in banks if b), (None, None))
        if bank is None:
            return out  # a 2-D weight read otherwise (an embedding lookup)
        if _ptr(out) == _ptr(t) and _ptr(t) in reg.by_ptr:
            return out  # a view of the bank itself: located where a product uses it
        if all(reg.known(u) or b for u, b in banks):
            # made from weights alone (`bank[0] * 2`, a view of a copy): a product that
            # uses it as a weight cannot be attributed and is refused there; mixed with
            # activations (a 3-D gate bank times a lane) it is activation data
            reg.taints[id(out)] = (weakref.ref(out), f"{bank} (via {name})")
        return out


def _refuse_tainted(reg: _Registry, t, op: str) -> None:
    src = reg.tainted(t)
    if src is not None:
        raise GolfError(f"calibration: {op} multiplies by a tensor computed from bank {src}; "
                        "only products with its slices (or copies) can be attributed")


def _merge_ranges(uses: _Uses, H: dict, n: dict, alias: dict) -> dict[str, str]:
    """Row-range keys `name#a:b` -> one H per matrix (every row must see the same inputs)."""
    merged = {}
    for name, ranges in uses.ranges.items():
        full = (0, uses.full[name])
        if ranges == {full}:
            continue
        cuts = sorted({c for r in ranges for c in r})
        segs = []
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            over = [r for r in ranges if r[0] <= lo and hi <= r[1]]
            if over:
                keys = [name if r == full else f"{name}#{r[0]}:{r[1]}" for r in over]
                own = [alias.get(k, k) for k in keys]
                segs.append(((lo, hi), sum(H[o] for o in own), sum(n[o] for o in own)))
        (r0, h0, n0) = segs[0]
        for (r, h, m) in segs[1:]:
            if m != n0 or not torch.allclose(h, h0, rtol=1e-9, atol=1e-12 * float(h0.abs().max())):
                raise GolfError(f"calibration: rows {r0[0]}:{r0[1]} and {r[0]}:{r[1]} of "
                                f"{name} read different inputs; one Hessian per matrix cannot "
                                "describe it")
        H[name], n[name] = h0.clone(), n0
        merged[name] = name
    return merged


def collect_bank_hessians(model: nn.Module, batches, autocast: bool | None = None,
                          progress: bool = False, source: str = "") -> BankHessians:
    """Run `batches` through `model`; H per bank slice and per 2-D weight used in a product."""
    device = _model_device(model)
    reg = _Registry(model)
    acc = _Accumulator(device)
    uses = _Uses(acc)
    t0 = time.perf_counter()

    def forward(batch):
        reg.clear()
        with _BankMode(reg, uses):
            model_logits(model, batch)

    try:
        run_batches(model, batches, acc, forward, autocast, progress)
    finally:
        reg.clear()
    owners = dict(acc.H)
    merged = _merge_ranges(uses, owners, acc.n, acc.alias)
    H, n_tok, groups = {}, {}, {}
    for k in reg.order:
        if k in merged:
            own = k
        elif k in uses.ranges:
            own = acc.alias.get(k, k)
        else:
            continue  # never reached by the batches
        H[k], n_tok[k] = owners[own], acc.n[own]
        groups.setdefault(own, []).append(k)
    if not H:
        raise GolfError("calibration: no product in forward used a parameter matrix")
    left_out = {k: "used transposed (its stored rows are the inputs): plain rounding"
                for k in H if uses.transposed.get(k)}
    on_cpu: dict[int, torch.Tensor] = {}  # one copy per shared H (GPTQ factors each once)
    keep = {}
    for k, v in H.items():
        if k not in left_out:
            if id(v) not in on_cpu:
                on_cpu[id(v)] = v.cpu()
            keep[k] = on_cpu[id(v)]
    return BankHessians(H=keep, n_tokens={k: n_tok[k] for k in keep}, source=source,
                        seconds=time.perf_counter() - t0,
                        groups=[[k for k in g if k in keep] for g in groups.values()
                                if any(k in keep for k in g)], left_out=left_out)
