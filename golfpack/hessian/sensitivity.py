"""Measured sensitivities for the fit (`sensitivity="family"|"tensor"`): the calibration loss
of the model with some weights replaced, and α per tensor = measured Δloss of a probe
quantization divided by its Hessian-weighted error (golfpack.hessian.fit's predicted loss
α·e then speaks in loss units)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from golfpack.hessian import fit, gptq

Log = Callable[[str], None] | None
PROBE_BITS = 5  # sensitivity probes at int5 gptq-lite (the records' operating range)


class CalibrationLoss:
    """loss(state) -> mean next-token loss of `model` with `state`'s tensors set over its
    weights, on `batches` (the measured-Δloss probes of sensitivity family|tensor and of the
    lookup mix). Slice names `bank[i]` are written into a copy of their bank; the model's
    logits come by its protocol (calib.model_logits), so banked record models probe the
    same way. The loss of the model as it is (`loss({})`) is measured once and kept, so
    every user of one instance (the lookup mix, the sensitivities) shares it."""

    def __init__(self, model: torch.nn.Module, batches: list[torch.Tensor],
                 autocast: bool | None = None):
        from golfpack.hessian.calib import _model_device

        self.model, self.batches, self.autocast = model, list(batches), autocast
        self.device = _model_device(model)
        self.ref = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._base: float | None = None

    def __call__(self, state: dict) -> float:
        if not state:
            if self._base is None:
                self._base = self._measure({})
            return self._base
        return self._measure(state)

    def _measure(self, state: dict) -> float:
        from golfpack.hessian.calib import _autocast, model_logits
        from golfpack.quant.banks import parse_slice

        model, ref = self.model, self.ref
        new = {}
        for k, v in state.items():
            p = parse_slice(k)
            if p is None:
                new[k] = v
                continue
            bank = new.setdefault(p[0], ref[p[0]].clone())
            bank[p[1]] = v.to(bank.dtype)
        model.load_state_dict({**ref, **new}, strict=True)
        total, n = 0.0, 0
        with torch.no_grad(), _autocast(self.device, self.autocast):
            for b in self.batches:
                b = b.to(self.device)
                logits = model_logits(model, b[:, :-1]).float()
                total += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1),
                    reduction="sum"))
                n += b[:, 1:].numel()
        model.load_state_dict(ref, strict=True)
        return total / n


def calibration_loss_fn(model: torch.nn.Module, batches: list[torch.Tensor],
                        autocast: bool | None = None) -> CalibrationLoss:
    """The calibration loss of `model` on `batches` (see CalibrationLoss)."""
    return CalibrationLoss(model, batches, autocast)


def _probe_rank(bits: int) -> tuple[bool, int]:
    return (bits < PROBE_BITS, bits if bits >= PROBE_BITS else -bits)


def measure_sensitivity(choices: dict[str, fit.TensorChoices], weights, preps, loss_fn,
                        granularity: str = "family", log: Log = None) -> dict[str, float]:
    """α per tensor: measured Δloss with a group (family or tensor) at its gptq-lite
    candidate of PROBE_BITS (or the nearest width above, else the widest below), divided by
    that candidate's summed Hessian-weighted error."""
    from golfpack.quant.scheme import family

    groups: dict[str, list[str]] = {}
    for n in choices:
        groups.setdefault(family(n) if granularity == "family" else n, []).append(n)
    base = loss_fn({})
    alphas, raw = {}, {}
    for g, names in groups.items():
        state, err = {}, 0.0
        for n in names:
            tc = choices[n]
            probe = min((o for o in tc.options if o.scheme.clip == "gptq-lite"
                         and not o.lqer_rank), key=lambda o: _probe_rank(o.scheme.bits))
            r = gptq.quantize_group({n: weights[n]}, {n: probe.scheme}, preps[n])[n]
            state[n] = (r.codes.float() * r.scales.float()[:, None]).reshape(weights[n].shape)
            err += probe.err
        delta = loss_fn(state) - base
        raw[g] = (delta, err)
        if log:
            log(f"sensitivity {g}: Δloss {delta:+.6f} at the probe")
    positive = [d / e for d, e in raw.values() if d > 0 and e > 0]
    floor = min(positive) * 0.1 if positive else 1.0
    for g, (d, e) in raw.items():
        a = d / e if d > 0 and e > 0 else floor  # noise-level Δloss: a small positive α
        for n in groups[g]:
            alphas[n] = a
    return alphas
