"""Quantization-aware training through golfpack's own `fake_quant` and scheme resolution.

Each quantized weight's forward is `torch.where(on, fake_quant(w, scheme), w)`, where `on`
is a 0-d bool tensor shared by every layer. A tensor is an input of a compiled graph, never a
constant: flipping it after torch.compile changes the compiled forward with no recompile (a
Python flag would be baked into the graph, the failure that kept "late QAT" from ever running
in three records). When on, the forward value is exactly the weight the export will
dequantize; the gradient is straight-through either way.

The spec is a golfpack scheme spec (`PATTERN=SCHEME;...`, see golfpack.quant.scheme), resolved by
golfpack exactly as the export resolves it, so each weight trains against the grid it will be
stored on. A bare scheme such as "int6" is shorthand for "the block matrices at int6, whatever
their size" (`@control=fp32;*.attn.*=int6;*.mlp.*=int6`: naming a selector switches off
golfpack's fp16 passthrough of small tensors); the embedding keeps golfpack's default.
Every CastedLinear weight and the tied output head are fake-quantized under their scheme;
vectors and control tensors (kept in float by the export, or rounded to fp16) are left alone.
"""

from __future__ import annotations

import torch

from golfpack.errors import GolfError
from golfpack.quant.rows import Scheme, fake_quant, format_scheme
from golfpack.quant.scheme import resolve
from trainer.model import GPT, CastedLinear

EMBED_NAME = "tok_emb.weight"


class QATError(GolfError):
    """A QAT spec that cannot be parsed or applied."""


def expand_spec(spec: str) -> str:
    """A bare scheme ("int6", "int5:gptq-lite") means the attention and MLP matrices."""
    text = spec.strip()
    if "=" in text:
        return text
    return f"@control=fp32;*.attn.*={text};*.mlp.*={text}"


def weight_schemes(model: GPT, spec: str) -> dict[str, Scheme]:
    """Scheme of every parameter under `spec`, resolved by golfpack as the export does."""
    tensors = {n: (str(p.dtype).removeprefix("torch."), p.numel())
               for n, p in model.named_parameters()}
    return resolve(expand_spec(spec), tensors)


def dominant_scheme(model: GPT, spec: str) -> str:
    """The scheme of the largest weight, e.g. "int6" (names the export in log tags)."""
    schemes = weight_schemes(model, spec)
    name = max(schemes, key=lambda n: (model.get_parameter(n).numel(), n))
    return format_scheme(schemes[name]).split(":")[0]


class FakeQuantTransform:
    """A weight transform for CastedLinear / the tied head (a plain object, not a Module, so
    it never enters the state dict)."""

    def __init__(self, scheme: Scheme, switch: torch.Tensor):
        self.scheme = scheme
        self.switch = switch

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.switch, fake_quant(w, self.scheme), w)

    def __repr__(self) -> str:
        return f"FakeQuantTransform({self.scheme})"


class QATSwitch:
    """The installed QAT state of one model: which weights are fake-quantized under which
    scheme, and the on/off tensor they all read."""

    def __init__(self, schemes: dict[str, Scheme], switch: torch.Tensor, spec: str):
        self.schemes = schemes      # parameter name -> Scheme
        self.switch = switch
        self.spec = spec
        self._on = bool(switch.item())

    @property
    def on(self) -> bool:
        return self._on

    def set(self, on: bool) -> None:
        """Flip every fake quantizer at once (in place: compiled graphs see it)."""
        self.switch.fill_(bool(on))
        self._on = bool(on)


def install_qat(model: GPT, spec: str, device=None, on: bool = False) -> QATSwitch:
    """Install fake quantizers on `model` per `spec`; returns the switch (initially `on`)."""
    device = device if device is not None else next(model.parameters()).device
    switch = torch.tensor(bool(on), dtype=torch.bool, device=device)
    installed: dict[str, Scheme] = {}
    modules = dict(model.named_modules())
    for name, scheme in weight_schemes(model, spec).items():
        if scheme.kind in ("fp32", "raw"):
            continue
        owner = modules.get(name.rsplit(".", 1)[0]) if "." in name else None
        transform = FakeQuantTransform(scheme, switch)
        if name == EMBED_NAME:
            model.head_weight_transform = transform
        elif isinstance(owner, CastedLinear) and name.endswith(".weight"):
            owner.weight_transform = transform
        else:
            continue  # vectors / control tensors: no forward hook, left in float
        installed[name] = scheme
    if not installed:
        raise QATError(f"qat spec {spec!r} quantizes no weight of this model")
    return QATSwitch(installed, switch, spec)


def remove_qat(model: GPT) -> None:
    """Take every fake quantizer off (e.g. before evaluating dequantized weights)."""
    model.head_weight_transform = None
    for m in model.modules():
        if isinstance(m, CastedLinear):
            m.weight_transform = None
