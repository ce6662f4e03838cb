"""Step 1 of the pipeline: a state dict under a scheme spec -> an in-memory QuantizedModel.

A QuantizedModel is a list of entries; each entry has a `kind` and named arrays (`parts`).
Kinds known to this version:
  quant  parts codes (int8 [rows, cols]) + scales (float16 [rows]); ŵ = codes * scales
  float  part data (float16 or float32, flat), cast back to the original dtype
  raw    part data (the original bytes, exact)
Other producers (Hessian GPTQ, low-rank corrections) build entries themselves and hand the
model to `golfpack.artifact.encode_artifact`; a new kind registers a reconstruction
function in `RECONSTRUCT` and its parts are stored like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from golfpack.errors import GolfError
from golfpack.quant import lowrank
from golfpack.quant.banks import join_banks, split_banks
from golfpack.quant.rows import Scheme, as_rows, dequantize, format_scheme, parse_scheme, quantize
from golfpack.quant.scheme import family, resolve

# torch dtype <-> stable name (the artifact stores these ids).
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
    "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def dtype_name(t: torch.Tensor) -> str:
    try:
        return DTYPE_NAMES[t.dtype]
    except KeyError:
        raise GolfError(f"unsupported tensor dtype {t.dtype}") from None


@dataclass
class Part:
    """One array of an entry. `coding` tells the encoder how to store it:
    "codes" (int8 integer codes, `bits` wide: eligible for ans and bit packing) or "bytes"
    (opaque little-endian bytes of `dtype`, byte-shuffled by element width when it helps)."""

    data: np.ndarray
    coding: str = "bytes"
    bits: int | None = None
    group: str | None = None  # streams pool parts with equal (role, group, coding, bits)


@dataclass
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: str  # original dtype name
    kind: str  # "quant" | "float" | "raw" | a later kind
    scheme: str  # canonical scheme text
    parts: dict[str, Part]
    meta: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # rel_mse, floored_rows (not stored)

    @property
    def params(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _reconstruct_quant(e: Entry) -> torch.Tensor:
    """ŵ = codes * scale in float32 — numpy's single-threaded product, bit-identical to
    quant.dequantize (IEEE float32 multiply) and immune to thread oversubscription."""
    codes = np.asarray(e.parts["codes"].data)
    scales = np.asarray(e.parts["scales"].data).astype(np.float32)
    if codes.size == 0:
        return torch.zeros(e.shape, dtype=torch.float32)
    hat = np.multiply(codes.reshape(scales.shape[0], -1), scales[:, None], dtype=np.float32)
    return torch.from_numpy(hat).reshape(e.shape)


def _reconstruct_float(e: Entry) -> torch.Tensor:
    arr = np.ascontiguousarray(e.parts["data"].data)
    return torch.from_numpy(arr.copy()).reshape(e.shape).to(DTYPES[e.dtype])


def _reconstruct_raw(e: Entry) -> torch.Tensor:
    raw = np.ascontiguousarray(e.parts["data"].data).view(np.uint8)
    t = torch.frombuffer(bytearray(raw.tobytes()), dtype=DTYPES[e.dtype]) if raw.size else \
        torch.empty(0, dtype=DTYPES[e.dtype])
    return t.reshape(e.shape)


# kind -> (required parts, function rebuilding the tensor). Quantized kinds dequantize to
# float32; passthrough kinds restore the original dtype.
RECONSTRUCT: dict[str, tuple[tuple[str, ...], Callable[[Entry], torch.Tensor]]] = {
    "quant": (("codes", "scales"), _reconstruct_quant),
    "float": (("data",), _reconstruct_float),
    "raw": (("data",), _reconstruct_raw),
    # quant codes + a low-rank correction A·B (fitted by golfpack.hessian.lqer)
    lowrank.KIND: (lowrank.PARTS, lowrank.reconstruct_entry),
}


@dataclass
class QuantizedModel:
    entries: list[Entry]

    def __iter__(self):
        return iter(self.entries)

    def __getitem__(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Dequantized float32 tensors (passthrough tensors in their original dtype); bank
        slices stacked back into their banks (golfpack.quant.banks)."""
        return join_banks({e.name: reconstruct(e) for e in self.entries})

    @property
    def params(self) -> int:
        return sum(e.params for e in self.entries)


def reconstruct(e: Entry) -> torch.Tensor:
    if e.kind not in RECONSTRUCT:
        raise GolfError(f"entry {e.name!r} has kind {e.kind!r}, unknown to this golfpack")
    return RECONSTRUCT[e.kind][1](e)


FP16_MAX = 65504.0


def quant_entry(name: str, w: torch.Tensor, scheme: Scheme) -> Entry:
    """One tensor -> Entry under `scheme` (int quantization or a passthrough)."""
    dt = dtype_name(w)
    shape = tuple(int(s) for s in w.shape)
    w = w.detach().cpu()
    fam = family(name)
    if scheme.kind == "raw" or not w.is_floating_point():
        data = w.contiguous().reshape(-1).view(torch.uint8).numpy().copy() if w.numel() else \
            np.zeros(0, np.uint8)
        return Entry(name, shape, dt, "raw", "raw", {"data": Part(data, group=dt)},
                     stats={"rel_mse": 0.0})
    if w.numel() and not bool(torch.isfinite(w).all()):
        raise GolfError(f"tensor {name!r} holds NaN or inf: refusing to store it")
    if scheme.kind in ("fp16", "fp32"):
        kind = scheme.kind
        if kind == "fp16" and w.numel() and float(w.abs().max()) > FP16_MAX:
            kind = "fp32"  # fp16 would turn these values into inf: keep them exactly instead
        target = np.float16 if kind == "fp16" else np.float32
        data = w.float().reshape(-1).numpy().astype(target)
        back = torch.from_numpy(data.astype(np.float32))
        stats = {"rel_mse": _rel_mse(w, back.reshape(shape))}
        if kind != scheme.kind:
            stats["fp16_overflow"] = True
        return Entry(name, shape, dt, "float", kind, {"data": Part(data, group=kind)}, stats=stats)
    r = quantize(w, scheme)
    codes = r.codes.numpy()
    parts = {"codes": Part(codes, "codes", scheme.bits, group=fam),
             "scales": Part(r.scales.numpy(), group=fam)}
    hat = dequantize(r.codes, r.scales)
    return Entry(name, shape, dt, "quant", format_scheme(scheme), parts,
                 stats={"rel_mse": _rel_mse(as_rows(w), hat), "floored_rows": r.floored_rows,
                        "rows": int(codes.shape[0])})


def _rel_mse(w: torch.Tensor, hat: torch.Tensor) -> float:
    w64 = w.double().reshape(-1)
    den = float(w64.square().sum())
    num = float((w64 - hat.double().reshape(-1)).square().sum())
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


@contextmanager
def single_thread():
    """Run CPU quantization on one intra-op thread. The per-tensor elementwise work is small
    (<= ~1M elements a call), so extra threads gain little, while on a shared or busy
    machine OpenMP oversubscription made the same work 10-20x slower (measured: 27M
    parameters in 0.7 s on 1 thread vs 9-15 s on 2 threads of a loaded 2-core box)."""
    old = torch.get_num_threads()
    if old > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if old > 1:
            torch.set_num_threads(old)


def quantize_entries(state_dict: Mapping[str, torch.Tensor], spec: str | None = None,
                     schemes: Mapping[str, Scheme | str] | None = None,
                     on_step: Callable[[str], None] | None = None) -> list[Entry]:
    """quantize_state_dict's entries, in order: what the encoder needs (golfpack.encode),
    without the QuantizedModel methods that rebuild tensors (nor a bundle carrying them)."""
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise GolfError(f"state_dict entry {name!r} is not a tensor")
    state_dict = split_banks(state_dict)  # a 3-D bank is quantized as its L matrices
    info = {n: (dtype_name(t), int(t.numel())) for n, t in state_dict.items()}
    chosen = resolve(spec, info)
    for name, s in (schemes or {}).items():
        if name not in chosen:
            raise GolfError(f"scheme override for unknown tensor {name!r}")
        chosen[name] = parse_scheme(s) if isinstance(s, str) else s
    entries = []
    with single_thread():
        for name, t in state_dict.items():
            if on_step:
                on_step(name)
            entries.append(quant_entry(name, t, chosen[name]))
    return entries


def quantize_state_dict(state_dict: Mapping[str, torch.Tensor], spec: str | None = None,
                        schemes: Mapping[str, Scheme | str] | None = None,
                        on_step: Callable[[str], None] | None = None) -> QuantizedModel:
    """Quantize every tensor; `schemes` (name -> Scheme) overrides the spec per tensor."""
    return QuantizedModel(quantize_entries(state_dict, spec, schemes, on_step))
