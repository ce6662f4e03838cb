"""Symmetric per-row integer quantizers (int2..int8) shared by the packer and by QAT.

One tensor is stored under a `Scheme`: either per-output-row integers (ŵ = q·s, q in
[-qmax, qmax], qmax = 2^(N-1) - 1, one fp16 scale per row) or a float passthrough.

Exactness contract: `quantize`, `dequantize` and `fake_quant` run the same float32 ops, so
the forward value of `fake_quant(w, scheme)` equals `dequantize(*quantize(w, scheme))` bit for
bit. Scales are rounded to fp16 *before* codes are computed, and rounded *up* (the smallest
fp16 >= clip/qmax), so every |w| <= clip lands on the grid with |w - ŵ| <= s/2 and nothing
inside the clip is clamped. Scales are clamped to [0, 65504]; a row whose scale is 0 (an
all-zero row, or a clip below fp16's range) gets codes 0 and dequantizes to exact zeros —
never NaN or inf.

Everything here is free of `.item()` and data-dependent Python branches, so `fake_quant`
traces under torch.compile (branches depend on shapes and on the Scheme only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from golfpack.errors import GolfError

KINDS = ("int", "fp16", "fp32", "raw")
CLIPS = ("amax", "pct", "gptq-lite", "sdclip")
# The records' GPTQ-lite clip candidates (percentiles of |w| per row; 1.0 = amax).
GPTQ_LITE_PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
FP16_MAX = 65504.0


class SchemeError(GolfError):
    """A scheme string or scheme spec that cannot be parsed."""


@dataclass(frozen=True)
class Scheme:
    """How one tensor is stored."""

    kind: str  # "int" | "fp16" | "fp32" | "raw" (exact passthrough)
    bits: int = 8  # 2..8 for kind == "int"
    clip: str = "amax"  # "amax" | "pct" | "gptq-lite" | "sdclip"
    clip_arg: float | None = None  # pct p / sdclip k
    per_matrix: bool = False  # gptq-lite: one clip choice per matrix (records) vs per row
    floor: bool = False  # the records' max(clip/qmax, 1/qmax) scale floor
    # the challenge baseline's export rounding: clip the weights, codes from the float32
    # scale, that scale then rounded to the nearest fp16 (implies the floor)
    baseline: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SchemeError(f"unknown scheme kind {self.kind!r} (use one of {', '.join(KINDS)})")
        if self.kind != "int":
            return
        if not (2 <= int(self.bits) <= 8) or int(self.bits) != self.bits:
            raise SchemeError(f"int bits must be 2..8, got {self.bits}")
        if self.clip not in CLIPS:
            raise SchemeError(f"unknown clip {self.clip!r} (use one of {', '.join(CLIPS)})")
        if self.clip == "pct":
            p = self.clip_arg
            if p is None or not (0.0 < p <= 100.0):
                raise SchemeError(f"pct(p) needs 0 < p <= 1 (a fraction) or 1 < p <= 100 "
                                  f"(percent), got {p}")
        elif self.clip == "sdclip":
            k = self.clip_arg
            if k is None or not (0.0 < k < 1e6):
                raise SchemeError(f"sdclip(k) needs k > 0, got {k}")
        elif self.clip_arg is not None:
            raise SchemeError(f"clip {self.clip!r} takes no argument")
        if self.per_matrix and self.clip != "gptq-lite":
            raise SchemeError("'matrix' (one clip per matrix) applies to gptq-lite only")
        if self.baseline and self.clip not in ("pct", "amax"):
            raise SchemeError("'baseline' rounding applies to pct and amax clips only")

    @property
    def quantile(self) -> float | None:
        """The pct clip as a fraction (pct(99.99984) is written in percent)."""
        if self.clip != "pct":
            return None
        p = float(self.clip_arg)
        return p / 100.0 if p > 1.0 else p

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def __str__(self) -> str:
        return format_scheme(self)


_INT_RE = re.compile(r"^int([0-9]+)$")
_CLIP_RE = re.compile(r"^([a-z-]+)(?:\(([^()]*)\))?$")


def parse_scheme(text: str) -> Scheme:
    """Parse "int6", "int6:gptq-lite", "int8:sdclip(20)", "int5:pct(0.9999)",
    "int6:gptq-lite:matrix", "int8:amax:floor", "fp16", "fp32" or "raw"."""
    if not isinstance(text, str) or not text.strip():
        raise SchemeError("empty scheme")
    parts = [p.strip() for p in text.strip().lower().split(":")]
    head = parts[0]
    if head in ("fp16", "fp32", "raw"):
        if len(parts) > 1:
            raise SchemeError(f"scheme {text!r}: {head} takes no options")
        return Scheme(kind=head)
    m = _INT_RE.match(head)
    if not m:
        raise SchemeError(f"scheme {text!r}: expected intN, fp16, fp32 or raw")
    bits = int(m.group(1))
    clip, clip_arg, per_matrix, floor, baseline = "amax", None, False, False, False
    for i, part in enumerate(parts[1:]):
        if part == "matrix":
            per_matrix = True
        elif part == "floor":
            floor = True
        elif part == "baseline":
            baseline = True
        elif part == "row":
            per_matrix = False
        else:
            cm = _CLIP_RE.match(part)
            if i != 0 or not cm or cm.group(1) not in CLIPS:
                raise SchemeError(f"scheme {text!r}: unknown option {part!r} "
                                  f"(clips: {', '.join(CLIPS)}; flags: matrix, floor, "
                                  "baseline)")
            clip = cm.group(1)
            if cm.group(2) is not None:
                try:
                    clip_arg = float(cm.group(2))
                except ValueError:
                    raise SchemeError(f"scheme {text!r}: {cm.group(2)!r} is not a number") from None
            elif clip in ("pct", "sdclip"):
                raise SchemeError(f"scheme {text!r}: {clip} needs an argument, e.g. {clip}(12)")
    return Scheme("int", bits, clip, clip_arg, per_matrix, floor, baseline)


def format_scheme(s: Scheme) -> str:
    """The canonical text of a scheme (parse_scheme(format_scheme(s)) == s)."""
    if s.kind != "int":
        return s.kind
    out = f"int{s.bits}:{s.clip}"
    if s.clip_arg is not None:
        out += f"({s.clip_arg:g})" if float(s.clip_arg) == float(f"{s.clip_arg:g}") \
            else f"({s.clip_arg!r})"
    if s.per_matrix:
        out += ":matrix"
    if s.floor:
        out += ":floor"
    if s.baseline:
        out += ":baseline"
    return out


@dataclass
class QuantResult:
    codes: torch.Tensor  # int8 [rows, cols]
    scales: torch.Tensor  # float16 [rows]
    floored_rows: int = 0  # rows whose scale the 1/qmax floor raised


def as_rows(w: torch.Tensor) -> torch.Tensor:
    """View a tensor as float32 [rows, cols]: 1-D (and 0-D) is one row, N-D keeps dim 0."""
    w = w.detach() if not w.requires_grad else w
    if w.dim() == 0:
        w = w.reshape(1, 1)
    elif w.dim() == 1:
        w = w.reshape(1, -1)
    elif w.dim() > 2:
        w = w.reshape(w.shape[0], -1)
    return w.float()


def fp16_scale_up(s: torch.Tensor) -> torch.Tensor:
    """The smallest fp16 value >= s (s float32, clamped to [0, 65504]), as float32.

    Computed with exact float32 arithmetic on the exponent bits rather than a dtype cast:
    compilers (inductor) may skip the rounding of an intermediate fp16 cast, and the scale
    must come out the same eager or compiled.
    """
    s = s.float().clamp(0.0, FP16_MAX)
    exponent = (s.view(torch.int32) >> 23) & 0xFF  # biased float32 exponent of s
    # fp16 has 10 mantissa bits: spacing 2^(e-10) for normal values, 2^-24 below 2^-14.
    ulp_bits = ((exponent - 10).clamp(min=127 - 24)) << 23
    ulp = ulp_bits.view(torch.float32)
    return torch.ceil(s / ulp) * ulp


def _abs_quantiles(a: torch.Tensor, ps) -> list[torch.Tensor]:
    """Per-row quantiles of a = |w| with linear interpolation (torch.quantile's rule).

    Only the top of each row is needed, so `topk` replaces a full sort; the positions depend
    on the shape only, never on the data (compile-friendly)."""
    n = a.shape[1]
    spots = []
    for p in ps:
        pos = p * (n - 1)
        lo = min(int(pos), n - 1)
        spots.append((lo, min(lo + 1, n - 1), pos - lo))
    k = n - min(lo for lo, _, _ in spots)
    top = torch.topk(a, k, dim=1, sorted=True).values  # descending: top[:, j] = sorted[n-1-j]
    out = []
    for lo, hi, frac in spots:
        va, vb = top[:, n - 1 - lo], top[:, n - 1 - hi]
        out.append(va + (vb - va) * frac if frac > 0 else va)
    return out


def _scales(clip: torch.Tensor, scheme: Scheme):
    """Per-row clip -> (fp16-exact float32 scale rounded up, rows where the floor applies)."""
    qmax = float(scheme.qmax)
    raw = clip / qmax
    floored = raw < 1.0 / qmax
    if scheme.floor:
        raw = torch.maximum(raw, torch.full_like(raw, 1.0 / qmax))
    return fp16_scale_up(raw), floored


def _codes(w: torch.Tensor, s: torch.Tensor, qmax: float) -> torch.Tensor:
    """round(w / s) clamped to ±qmax, as float32 with -0 normalised to +0. A zero scale
    divides by +inf, so its row gets codes 0 whatever w holds."""
    div = torch.where(s > 0, s, torch.full_like(s, float("inf")))
    return torch.round(w / div[:, None]).clamp_(-qmax, qmax).add_(0.0)


def _grid(w: torch.Tensor, clip: torch.Tensor, scheme: Scheme):
    """Codes (float, -0 normalised to +0) and float32 fp16-exact scales for per-row clips
    -> (codes, scales, floored). Shared with golfpack.hessian.gptq."""
    s, floored = _scales(clip, scheme)
    return _codes(w, s, float(scheme.qmax)), s, floored


def _candidate_clips(w: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """[n_candidates, rows] clip values for the scheme's strategy (GPTQ uses them too)."""
    a = w.abs()
    if scheme.clip == "amax":
        return a.amax(dim=1)[None]
    if scheme.clip == "sdclip":
        if w.shape[1] < 2:  # a 1-element row has no unbiased std: fall back to amax
            return a.amax(dim=1)[None]
        std = torch.std(w.double(), dim=1, correction=1).float()  # float64: order-robust
        return (float(scheme.clip_arg) * std)[None]
    ps = [scheme.quantile] if scheme.clip == "pct" else list(GPTQ_LITE_PERCENTILES)
    return torch.stack(_abs_quantiles(a, ps))


def _baseline_rows(w: torch.Tensor, scheme: Scheme):
    """The challenge baseline's int8 export, row by row: clip = the |w| quantile of each row
    (torch.quantile), weights clamped to ±clip, scale = max(clip/qmax, 1/qmax) in float32,
    codes = round(clamped / scale), and the stored scale that float32 value rounded to the
    nearest fp16. ŵ = codes · fp16(scale), as the baseline's dequantizer computes it."""
    qmax = float(scheme.qmax)
    a = w.abs()
    clip = torch.quantile(a, scheme.quantile, dim=1) if scheme.clip == "pct" else a.amax(dim=1)
    clipped = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
    raw = clip / qmax
    floored = raw < 1.0 / qmax
    scale = raw.clamp_min(1.0 / qmax)
    codes = torch.clamp(torch.round(clipped / scale[:, None]), -qmax, qmax).add_(0.0)
    return codes, scale.to(torch.float16).float(), floored


def _quantize_rows(w: torch.Tensor, scheme: Scheme):
    """Core shared by quantize and fake_quant: -> (codes float32, scales float32, floored)."""
    if w.numel() == 0:
        z = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device)
        return torch.zeros_like(w), z, torch.zeros_like(z, dtype=torch.bool)
    if scheme.baseline:
        return _baseline_rows(w, scheme)
    clips = _candidate_clips(w, scheme)
    if clips.shape[0] == 1:
        return _grid(w, clips[0], scheme)
    qmax = float(scheme.qmax)
    scales, floors, errs = [], [], []
    for c in clips:
        s, f = _scales(c, scheme)
        div = torch.where(s > 0, s, torch.full_like(s, float("inf")))
        r = w / div[:, None]
        d = torch.round(r).clamp_(-qmax, qmax).sub_(r)
        # Σ (q s - w)^2 = s^2 Σ (q - w/s)^2 per row, accumulated in float64.
        errs.append(d.mul_(d).sum(dim=1, dtype=torch.float64) * s.double().square())
        scales.append(s)
        floors.append(f)
    err = torch.stack(errs)  # [n_candidates, rows]
    if scheme.per_matrix:
        pick = torch.argmin(err.sum(dim=1)).expand(w.shape[0])
    else:
        pick = torch.argmin(err, dim=0)
    rows = torch.arange(w.shape[0], device=w.device)
    s = torch.stack(scales)[pick, rows]
    f = torch.stack(floors)[pick, rows]
    return _codes(w, s, qmax), s, f


def clip_values(w: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """The per-row clip a scheme chooses (float32 [rows]); qmax·scale >= clip always."""
    w2 = as_rows(w)
    if w2.numel() == 0:
        return torch.zeros(w2.shape[0])
    clips = _candidate_clips(w2, scheme)
    if clips.shape[0] == 1:
        return clips[0]
    _, s, _ = _quantize_rows(w2, scheme)
    # Recover which candidate won: the one whose rounded-up scale matches.
    cand = torch.stack([fp16_scale_up(c / scheme.qmax) for c in clips])
    if scheme.floor:
        cand = torch.maximum(cand, fp16_scale_up(torch.full_like(cand, 1.0 / scheme.qmax)))
    idx = torch.argmax((cand == s[None]).to(torch.int8), dim=0)
    return clips[idx, torch.arange(w2.shape[0])]


def _check_int(scheme: Scheme) -> None:
    if scheme.kind != "int":
        raise SchemeError(f"scheme {scheme} is a passthrough, not an integer quantizer")


def quantize(w: torch.Tensor, scheme: Scheme) -> QuantResult:
    """Quantize a tensor per output row (1-D = one row; N-D rows = dim 0)."""
    _check_int(scheme)
    w2 = as_rows(w).detach()
    if not bool(torch.isfinite(w2).all()):
        raise GolfError("cannot quantize a tensor holding NaN or inf")
    q, s, floored = _quantize_rows(w2, scheme)
    return QuantResult(codes=q.to(torch.int8), scales=s.to(torch.float16),
                       floored_rows=int(floored.sum()) if scheme.floor or scheme.baseline
                       else 0)


def dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """ŵ = q·s as float32 [rows, cols]."""
    return codes.to(torch.float32) * scales.to(torch.float32)[:, None]


def fake_quant(w: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """QAT fake quantization: forward value = dequantize(*quantize(w)) reshaped like w (bit
    for bit when w is float32), gradient = identity (straight-through)."""
    if scheme.kind in ("fp32", "raw"):
        return w
    if scheme.kind == "fp16":
        hat = w.detach().to(torch.float16).to(w.dtype)
    else:
        w2 = as_rows(w.detach())
        q, s, _ = _quantize_rows(w2, scheme)
        hat = (q * s[:, None]).reshape(w.shape).to(w.dtype)
    # hat + (w - w) keeps hat's bits exactly (x - x == +0) while passing the gradient on.
    return hat + (w - w.detach())
