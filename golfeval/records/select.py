"""Which final-evaluation line of a run is its submitted score.

Every final line becomes a `Metric` with the kind of evaluation its label reports. Aliased
labels are corrected (a `final_int8_zlib_roundtrip` holding the sliding score after a
`final_eval_mode:sliding_window` announcement, or an online-TTT score with eval_time:0ms),
prints of the same score are merged (rounded + `_exact`, re-printed copies). Lines are of
two classes: final (`final_…`, `…_exact`, `legal_ttt`, `quantized_…`) and intermediate (a
`name:status` label such as `ttt_sliding:done`, progress/partial/aborted prints): when a
final-class line exists, intermediate ones never become the score (a failed TTT attempt's
`:done` line must not beat the run's `final_…_exact`). Within the class the highest-ranked
kind wins: ttt > sliding > other > flat; diagnostics never. Two different
scores of the top rank, or a kind that cannot be told, are reported as ambiguity.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

KINDS = ("flat", "sliding", "ttt", "diagnostic", "other")
KIND_RANK = {"flat": 1, "other": 2, "sliding": 3, "ttt": 4}
FAILED_EXPERIMENTS = {"final_int6_ttt": "a failed experiment in one record, never its claim"}
ALIAS_LABEL = "final_int8_zlib_roundtrip"
SLOW_FLAT_MS = 30_000.0  # flat evals of March records took 1-20 s; sliding ones 65 s and up
_KNOWN_PREFIXES = ("final", "quantized", "legal_ttt", "ttt_sliding", "diagnostic", "pre-quant",
                   "pre_quant", "prequant")
_EVAL_MS = re.compile(r"\b(?:eval_)?time\s*[:=]\s*(\d+(?:\.\d+)?)\s*ms")
_ELAPSED = re.compile(r"\belapsed\s*[:=]\s*(\d+(?:\.\d+)?)\s*s\b")
_STRIDE = re.compile(r"\bstride\s*[:=]\s*(\d+)")
_TEMP = re.compile(r"\bT\s*=\s*(\d+(?:\.\d+)?)")
_EVAL_MODE = re.compile(r"\beval_mode\s*[:=]\s*(\S+)")


@dataclass
class Metric:
    """One final-evaluation line."""

    label: str
    val_loss: float | None
    val_bpb: float
    kind: str
    line: int
    decimals: int
    loss_decimals: int = 0
    eval_time_ms: float | None = None
    stride: int | None = None
    temperature: float | None = None
    extras: str = ""
    note: str | None = None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("label", "val_loss", "val_bpb", "kind", "line",
                                           "eval_time_ms", "stride", "note")}
        for k in ("val_loss", "val_bpb"):  # JSON has no NaN
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = None
        return d


@dataclass
class Context:
    """What the rest of the run says about its final lines."""

    announced: tuple[int, str] | None = None  # (line, mode) of `final_eval_mode:...`
    last_progress_bpb: float | None = None  # last val_bpb printed during training
    harness: dict = field(default_factory=dict)
    mentions_ttt: object = lambda: False  # callable, evaluated only when needed


@dataclass
class Choice:
    status: str = "ok"  # ok | ambiguous | no_final_metric
    reason: str | None = None
    metric: Metric | None = None
    kind: str | None = None
    ambiguity: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def decimals(text: str) -> int:
    """Printed precision of a number (`_exact` lines carry 8 decimals, plain lines 4)."""
    if "e" in text.lower():
        return 8
    return len(text.split(".", 1)[1]) if "." in text else 0


def label_kind(label: str, extras: str = "") -> str:
    """Eval kind of a final-metric label as printed (before alias corrections)."""
    low = label.lower()
    if low.startswith(("diagnostic", "pre-quant", "pre_quant", "prequant")) or "post_ema" in low \
            or "post-ema" in low:
        return "diagnostic"
    if "ttt" in low:
        return "ttt"
    # final_temped: the sliding eval re-run at a tuned temperature (a sliding-rank score)
    if "sliding" in low or "temped" in low or "sliding" in extras.split() \
            or _STRIDE.search(extras):
        return "sliding"
    if "roundtrip" in low or "flat" in low or low.removesuffix("_exact") == "quantized":
        return "flat"  # final_flat_exact: golfeval score's own flat line
    return "other"


_INTERMEDIATE_WORDS = ("progress", "partial", "running", "interim", "abort", "chunk", "batch",
                       "warmup", "step")


def label_class(label: str) -> str:
    """final | intermediate: a `name:status` label or a progress-like word is intermediate."""
    low = label.lower()
    if ":" in low or "=" in low or any(w in low for w in _INTERMEDIATE_WORDS):
        return "intermediate"
    return "final"


def is_known_label(label: str) -> bool:
    low = label.lower()
    return low.startswith(_KNOWN_PREFIXES) or any(w in low for w in ("roundtrip", "sliding", "ttt"))


def metric_from_line(pre: str, loss: str | None, bpb: str, post: str, line: int) -> Metric | None:
    """Split `<label>[ <extras>] val_loss.. val_bpb..[ <extras>]` into a Metric."""
    toks = pre.split()
    if not toks:
        return None
    if ":" in toks[0] or "=" in toks[0]:  # ttt_sliding:done val_loss=...
        label_toks, extra_toks = toks[:1], toks[1:]
    else:
        label_toks, extra_toks = [], []
        for tok in toks:
            if extra_toks or any(c in tok for c in ":=(") or (label_toks and tok == "sliding"):
                extra_toks.append(tok)
            else:
                label_toks.append(tok)
    label = " ".join(label_toks)
    extras = " ".join(extra_toks) + " " + post
    m = Metric(label=label, val_loss=float(loss) if loss else None, val_bpb=float(bpb),
               kind=label_kind(label, extras), line=line, decimals=decimals(bpb),
               loss_decimals=decimals(loss) if loss else 0, extras=extras.strip())
    t = _EVAL_MS.search(extras)
    if t:
        m.eval_time_ms = float(t.group(1))
    else:
        e = _ELAPSED.search(extras)
        m.eval_time_ms = float(e.group(1)) * 1000.0 if e else None
    s = _STRIDE.search(extras)
    m.stride = int(s.group(1)) if s else None
    tm = _TEMP.search(extras)
    m.temperature = float(tm.group(1)) if tm else None
    return m


def _apply_aliases(metric: Metric, ctx: Context) -> list[dict]:
    """Correct the kind of aliased labels; return ambiguity entries when it cannot be told."""
    base = metric.label.lower().removesuffix("_exact")
    if metric.kind != "flat" or "roundtrip" not in base:
        return []
    mode = _EVAL_MODE.search(metric.extras)
    if mode and "ttt" in mode.group(1):
        metric.kind, metric.note = "ttt", f"{metric.label} holds an online-TTT score (eval_mode)"
        return []
    if metric.eval_time_ms == 0.0 and base == ALIAS_LABEL:
        if ctx.mentions_ttt():
            metric.kind = "ttt"
            metric.note = f"{metric.label} with eval_time:0ms holds an online-TTT score"
            return []
        return [{"field": "kind", "candidates": ["flat", "ttt"], "reason":
                 f"{metric.label} reports eval_time:0ms: in one log it held an online-TTT score"}]
    if ctx.announced and ctx.announced[0] < metric.line:
        mode_name = ctx.announced[1]
        if "sliding" in mode_name:
            metric.kind = "sliding"
            metric.note = f"{metric.label} holds the sliding score (final_eval_mode:{mode_name})"
            return []
        if "ttt" in mode_name:
            metric.kind, metric.note = "ttt", f"{metric.label} under final_eval_mode:{mode_name}"
            return []
    if base != ALIAS_LABEL:
        return []
    why = []
    if metric.eval_time_ms is not None and metric.eval_time_ms >= SLOW_FLAT_MS:
        why.append(f"eval_time {metric.eval_time_ms / 1000:.1f} s is a sliding-eval duration")
    pre = ctx.last_progress_bpb
    if pre is not None and metric.val_bpb < pre - 0.01:
        why.append(f"val_bpb {metric.val_bpb:.4f} is far below the last training eval {pre:.4f}")
    if not why:
        return []
    return [{"field": "kind", "candidates": ["flat", "sliding"], "reason":
             f"{metric.label} held the sliding score in several March records and no "
             f"final_eval_mode line says which; " + "; ".join(why)}]


def same_value(a: Metric, b: Metric) -> bool:
    """Equal within the coarser of the two printed precisions."""
    tol = 0.5 * 10.0 ** -min(a.decimals, b.decimals) + 1e-12
    if abs(a.val_bpb - b.val_bpb) > tol:
        return False
    if a.val_loss is None or b.val_loss is None:
        return True
    ltol = 0.5 * 10.0 ** -min(a.loss_decimals, b.loss_decimals) + 1e-12
    return abs(a.val_loss - b.val_loss) <= ltol


def _merge(metrics: list[Metric]) -> list[list[Metric]]:
    """Group lines reporting the same score (rounded/_exact prints, re-printed copies)."""
    groups: list[list[Metric]] = []
    for m in metrics:
        for g in groups:
            if all(same_value(m, other) for other in g):
                g.append(m)
                break
        else:
            groups.append([m])
    return groups


def _representative(group: list[Metric]) -> Metric:
    rep = max(group, key=lambda m: (KIND_RANK.get(m.kind, 0), m.decimals, m.val_loss is not None,
                                    m.line))
    best = max(group, key=lambda m: (m.decimals, m.loss_decimals))
    if best is not rep and best.decimals > rep.decimals and best.kind == rep.kind:
        rep = best
    return rep


def _share_eval_times(metrics: list[Metric]) -> None:
    """`X_exact` lines repeat `X` without its extras: give them the eval time and stride."""
    for i, m in enumerate(metrics):
        base = m.label.lower().removesuffix("_exact")
        for prev in reversed(metrics[:i]):
            if prev.label.lower().removesuffix("_exact") == base and same_value(m, prev):
                if m.eval_time_ms is None:
                    m.eval_time_ms = prev.eval_time_ms
                if m.stride is None:
                    m.stride = prev.stride
                break


def choose(finals: list[Metric], others: list[Metric], ctx: Context) -> Choice:
    """Pick the submitted metric among the final lines of one run (`others`: lines with an
    unrecognised label, used only when nothing else is there)."""
    out = Choice()
    kind_doubts: dict[int, list[dict]] = {}
    candidates = []
    _share_eval_times(finals)
    for metric in finals:
        if not (math.isfinite(metric.val_bpb) and
                (metric.val_loss is None or math.isfinite(metric.val_loss))):
            metric.note = "non-finite value"
            continue
        base = metric.label.lower().removesuffix("_exact")
        if base in FAILED_EXPERIMENTS:
            metric.note = f"{metric.label}: {FAILED_EXPERIMENTS[base]}"
            out.notes.append(f"ignored {metric.label} (line {metric.line}): "
                             f"{FAILED_EXPERIMENTS[base]}")
            continue
        doubts = _apply_aliases(metric, ctx)
        if doubts:
            kind_doubts[id(metric)] = doubts
        if metric.kind != "diagnostic":
            candidates.append(metric)
    finals_cls = [m for m in candidates if label_class(m.label) == "final"]
    if finals_cls and len(finals_cls) < len(candidates):
        for m in candidates:
            if label_class(m.label) != "final" and not any(same_value(m, f) for f in finals_cls):
                m.note = "intermediate line; a final line of the run wins"
                out.notes.append(f"ignored {m.label} (line {m.line}, val_bpb {m.val_bpb}): an "
                                 "intermediate line, the run prints a final one")
        candidates = finals_cls
    if not candidates and others:
        candidates = [m for m in others if math.isfinite(m.val_bpb)]
        out.notes.append("no recognised final label; using the unrecognised one(s)")
    if not candidates:
        out.status = "no_final_metric"
        if any(m.note == "non-finite value" for m in finals):
            out.reason = "the final evaluation printed a non-finite score (nan/inf)"
        elif any(m.kind == "diagnostic" for m in finals):
            out.reason = "only diagnostic evaluations were printed"
        return out
    groups = _merge(candidates)
    reps = []
    for g in groups:
        rep = _representative(g)
        reps.append(rep)
        for m in g:
            if m is not rep and KIND_RANK[m.kind] < KIND_RANK[rep.kind]:
                m.note = m.note or f"copy of {rep.label} (line {rep.line})"
    top = max(KIND_RANK[r.kind] for r in reps)
    best = [r for r in reps if KIND_RANK[r.kind] == top]
    if len(best) > 1 and "val_bpb" in ctx.harness:
        hv = ctx.harness["val_bpb"]
        tol = 0.5 * 10.0 ** -ctx.harness.get("decimals", 4) + 1e-12
        match = [r for r in best if abs(r.val_bpb - hv) <= max(tol, 0.5 * 10.0 ** -r.decimals)]
        if len(match) == 1:
            best = match
            out.notes.append("chosen by the harness summary val_bpb")
    if len(best) > 1:
        out.status = "ambiguous"
        out.reason = (f"{len(best)} different {best[0].kind} scores: " +
                      ", ".join(f"{r.label}={r.val_bpb}" for r in best))
        out.ambiguity.append({
            "field": "val_bpb",
            "candidates": [{"label": r.label, "val_loss": r.val_loss, "val_bpb": r.val_bpb,
                            "kind": r.kind, "line": r.line} for r in best],
            "reason": "several final scores of the same rank; the log does not say which one "
                      "was submitted"})
        return out
    chosen = best[0]
    out.metric, out.kind = chosen, chosen.kind
    if chosen.note:
        out.notes.append(chosen.note)
    if id(chosen) in kind_doubts:
        out.ambiguity.extend(kind_doubts[id(chosen)])
        out.kind = None
    return out
