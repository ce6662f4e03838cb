"""An empirical causality test for any evaluation mode.

A mode is a function tokens, target_bytes -> ScoreResult with per-target nats (NaN where a
target is not scored). The audit evaluates a stream, then copies of it in which every token
after position t is replaced by random tokens, for several cuts t (the mode's own boundaries
- documents, chunks, blocks - and their neighbours, plus random positions). A causal mode
gives the tokens at positions 1..t (whose own values and whole history were kept) exactly
the losses it gave them in the original stream: bit for bit on CPU. Every evaluation is also
checked for coverage (each target the mode promises scored exactly once: the reported count
equals the number of scored positions) and accounting (the reported nats equal the per-target
sum; the reported bytes equal the byte tables' sum over the scored targets).

New modes plug in with `register("name")` on a factory (model, AuditConfig) -> AuditMode.
The leak checks of golfeval.audit.checks (normalization, target independence, document
isolation) run on the same modes; a mode may add `distributions` (whole predicted
distributions) and declare `doc_isolated`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from golfpack.errors import GolfError

Evaluator = Callable[[np.ndarray, np.ndarray], "object"]  # (tokens, target_bytes) -> result


@dataclass
class AuditMode:
    name: str
    evaluate: Evaluator
    expected_scored: Callable[[int], int] = lambda n_tokens: max(0, n_tokens - 1)
    boundaries: Callable[[np.ndarray], Iterable[int]] = lambda tokens: ()
    # optional: tokens -> float64 [n-1, vocab] log-probabilities (NaN rows: not scored)
    distributions: Callable[[np.ndarray], np.ndarray] | None = None
    doc_isolated: bool = False  # the mode claims documents never see each other


@dataclass
class AuditConfig:
    seq_len: int = 1024
    stride: int = 64
    batch: int = 4
    device: str = "cpu"
    doc_isolation: bool = False
    bos_id: int = 1
    ttt: object = None          # LoraSettings / SGDSettings for the TTT modes


MODES: dict[str, Callable[[object, AuditConfig], AuditMode]] = {}


def register(name: str):
    """Decorator: make a mode factory (model, AuditConfig) -> AuditMode auditable by name."""
    def wrap(factory):
        MODES[name] = factory
        return factory
    return wrap


def check_mode(name: str) -> None:
    """Refuse a mode nobody registered (callers check before loading a model)."""
    if name not in MODES:
        raise GolfError(f"unknown audit mode {name!r} (one of {', '.join(sorted(MODES))})")


def load_plugin(name: str) -> None:
    """Import a module the user named (a dotted name, or a path to a .py file) so that the
    modes it registers become auditable. Nothing is imported unless named."""
    import importlib
    import importlib.util
    import os
    import sys

    try:
        if name.endswith(".py"):
            if not os.path.isfile(name):
                raise GolfError(f"plugin {name}: no such file")
            mod_name = os.path.splitext(os.path.basename(name))[0]
            spec = importlib.util.spec_from_file_location(mod_name, name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.append(os.getcwd())
            importlib.import_module(name)
    except ImportError as exc:
        raise GolfError(f"cannot import plugin {name}: {exc}") from None


def build_mode(name: str, model, config: AuditConfig) -> AuditMode:
    check_mode(name)
    return MODES[name](model, config)


@register("flat")
def _flat(model, cfg: AuditConfig) -> AuditMode:
    from golfeval.score.core import score_tokens

    def evaluate(tokens, tb):
        return score_tokens(model, tokens, tb, mode="flat", seq_len=cfg.seq_len,
                            batch=cfg.batch, doc_isolation=cfg.doc_isolation,
                            device=cfg.device, per_token=True, bos_id=cfg.bos_id)

    return AuditMode("flat", evaluate,
                     lambda n: (max(0, n - 1) // cfg.seq_len) * cfg.seq_len,
                     lambda tokens: range(cfg.seq_len, tokens.size, cfg.seq_len),
                     distributions=_distributions(model, cfg, "flat"),
                     doc_isolated=cfg.doc_isolation)


def _distributions(model, cfg: AuditConfig, mode: str):
    from golfeval.audit.distributions import window_distributions

    return lambda tokens: window_distributions(model, tokens, mode, cfg.seq_len, cfg.stride,
                                               cfg.doc_isolation, cfg.device, cfg.bos_id)


@register("sliding")
def _sliding(model, cfg: AuditConfig) -> AuditMode:
    from golfeval.score.core import score_tokens

    def evaluate(tokens, tb):
        return score_tokens(model, tokens, tb, mode="sliding", seq_len=cfg.seq_len,
                            stride=cfg.stride, batch=cfg.batch, doc_isolation=cfg.doc_isolation,
                            device=cfg.device, per_token=True, bos_id=cfg.bos_id)

    return AuditMode("sliding", evaluate,
                     boundaries=lambda tokens: range(cfg.seq_len, tokens.size, cfg.stride),
                     distributions=_distributions(model, cfg, "sliding"),
                     doc_isolated=cfg.doc_isolation)


def _document_chunk_starts(starts, ntargets, chunk: int) -> list[int]:
    """Where per-document LoRA TTT's schedule changes: each document's start and the start
    of each of its chunks (documents as golfeval.ttt.lora.split_documents gives them)."""
    out = list(starts)
    for a, n in zip(starts, ntargets, strict=True):
        out.extend(range(int(a) + chunk, int(a + n), chunk))
    return out


@register("lora")
def _lora(model, cfg: AuditConfig) -> AuditMode:
    from golfeval.ttt.lora import LoraSettings, evaluate_lora, split_documents

    s = cfg.ttt if isinstance(cfg.ttt, LoraSettings) else LoraSettings(context=cfg.seq_len)

    def evaluate(tokens, tb):
        return evaluate_lora(model, tokens, tb, s, device=cfg.device, per_token=True,
                             bos_id=cfg.bos_id)

    def boundaries(tokens):
        return _document_chunk_starts(*split_documents(tokens, cfg.bos_id), s.chunk)

    return AuditMode("lora", evaluate, boundaries=boundaries, doc_isolated=True)


@register("sgd")
def _sgd(model, cfg: AuditConfig) -> AuditMode:
    from golfeval.ttt.sgd import SGDSettings, evaluate_sgd

    s = cfg.ttt if isinstance(cfg.ttt, SGDSettings) else SGDSettings(
        seq_len=cfg.seq_len, stride=cfg.stride, score_batch=cfg.batch)

    def evaluate(tokens, tb):
        return evaluate_sgd(model, tokens, tb, s, device=cfg.device, per_token=True,
                            doc_isolation=cfg.doc_isolation, bos_id=cfg.bos_id)

    return AuditMode("sgd", evaluate,
                     boundaries=lambda tokens: range(s.chunk_tokens, tokens.size,
                                                     s.chunk_tokens))


@register("phased")
def _phased(model, cfg: AuditConfig) -> AuditMode:
    from golfeval.ttt.lora import LoraSettings, split_documents
    from golfeval.ttt.phased import PhasedSettings, evaluate_phased, phase_boundaries

    s = cfg.ttt if isinstance(cfg.ttt, PhasedSettings) else PhasedSettings(
        lora=LoraSettings(context=cfg.seq_len))

    def evaluate(tokens, tb):
        return evaluate_phased(model, tokens, tb, s, device=cfg.device, per_token=True,
                               bos_id=cfg.bos_id)

    def boundaries(tokens):
        # document starts, LoRA chunk starts, and the first target after each phase
        starts, ntargets = split_documents(tokens, cfg.bos_id)
        out = _document_chunk_starts(starts, ntargets, s.lora.chunk)
        out.extend(int(starts[b]) for b in phase_boundaries(int(starts.size), s.phases))
        return out

    return AuditMode("phased", evaluate, boundaries=boundaries)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    position: int | None = None  # first offending token position, for the leak checks
    skipped: bool = False  # the check could not apply to this mode (counts as no failure)


@dataclass
class CutResult:
    cut: int                    # tokens 0..cut kept, the rest randomised
    source: str                 # "boundary" or "random"
    ok: bool
    first_violation: int | None = None  # smallest token position <= cut whose loss changed
    max_abs_diff: float = 0.0


@dataclass
class AuditReport:
    mode: str
    tokens: int
    scored: int
    checks: list[Check] = field(default_factory=list)
    cuts: list[CutResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks) and all(c.ok for c in self.cuts)

    @property
    def first_violation(self) -> int | None:
        bad = [c.first_violation for c in self.cuts if c.first_violation is not None]
        bad += [c.position for c in self.checks if not c.ok and c.position is not None]
        return min(bad) if bad else None

    def to_dict(self) -> dict:
        return {"mode": self.mode, "result": "PASS" if self.passed else "FAIL",
                "tokens": self.tokens, "scored": self.scored,
                "first_violation": self.first_violation,
                "checks": [asdict(c) for c in self.checks],
                "cuts": [asdict(c) for c in self.cuts], "seconds": self.seconds}


def choose_cuts(n_tokens: int, boundaries: Iterable[int], k: int,
                rng: np.random.Generator, documents: Iterable[int] = ()) -> list[tuple[int, str]]:
    """k cuts t in [1, n_tokens-2]: about half at boundaries b (t = b-1, b or b+1: the last
    token before, the first of, or the second of a new document/chunk/block), the rest
    uniform. Whenever the stream holds a document start (BOS) after its first token, at
    least one cut sits at one, whatever the mode's own boundaries. Sorted, distinct."""
    lo, hi = 1, n_tokens - 2
    if hi < lo or k < 1:
        return []
    chosen: dict[int, str] = {}
    docs = sorted(int(b) for b in documents if 2 <= int(b) <= hi)
    if docs:  # a document start in the middle of the stream, cut at b-1, b or b+1
        b = docs[len(docs) // 2]
        chosen[min(hi, b - 1 + int(rng.integers(0, 3)))] = "document"
    near = sorted({t for b in boundaries for t in (int(b) - 1, int(b), int(b) + 1)
                   if lo <= t <= hi} - set(chosen))
    n_near = min(len(near), (k + 1) // 2, k - len(chosen))
    if n_near:
        # spread over the stream: the first boundary, then evenly spaced picks
        picks = np.unique(np.linspace(0, len(near) - 1, n_near).round().astype(int))
        for i in picks:
            chosen[near[i]] = "boundary"
    tries = 0
    while len(chosen) < min(k, hi - lo + 1) and tries < 100 * k:
        t = int(rng.integers(lo, hi + 1))
        chosen.setdefault(t, "random")
        tries += 1
    return sorted(chosen.items())


def check_accounting(result, target_bytes: np.ndarray, expected: int, label: str) -> list[Check]:
    """Coverage exactly once, nats sum = per-target sum, bytes = the tables' sum."""
    nats = result.per_token_nats
    if nats is None or nats.shape != target_bytes.shape:
        return [Check(f"{label} per-target output", False,
                      "the mode returned no per-target nats of the stream's length")]
    scored = ~np.isnan(nats)
    n = int(scored.sum())
    checks = []
    ok = result.scored_tokens == n == expected
    checks.append(Check(f"{label} coverage", ok,
                        f"{result.scored_tokens:,} reported, {n:,} distinct targets scored, "
                        f"{expected:,} expected" + ("" if ok else " (a target scored twice "
                                                    "or missed)")))
    per = math.fsum(nats[scored].tolist())
    ok = math.isclose(result.nats_sum, per, rel_tol=1e-9, abs_tol=1e-9)
    checks.append(Check(f"{label} nats", ok,
                        f"reported {result.nats_sum:.6f}, per-target sum {per:.6f}"))
    want = int(target_bytes[scored].sum())
    ok = int(result.bytes_sum) == want
    checks.append(Check(f"{label} bytes", ok,
                        f"reported {int(result.bytes_sum):,}, byte tables give {want:,}"))
    return checks


def compare(base: np.ndarray, other: np.ndarray, cut: int, atol: float) -> CutResult:
    """Losses of tokens 1..cut (targets 0..cut-1) must match: bitwise when atol == 0."""
    a, b = base[:cut], other[:cut]
    same_nan = np.isnan(a) == np.isnan(b)
    if atol == 0:
        equal = (a.view(np.uint64) == b.view(np.uint64)) | (np.isnan(a) & np.isnan(b))
    else:
        equal = same_nan & ((np.abs(a - b) <= atol) | np.isnan(a))
    diff = np.abs(a - b)
    max_diff = float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0
    if equal.all():
        return CutResult(cut, "", True, None, max_diff)
    return CutResult(cut, "", False, int(np.argmin(equal)) + 1, max_diff)


def run_audit(mode: AuditMode, tokens: np.ndarray, target_bytes_fn: Callable, vocab_size: int,
              positions: int = 8, seed: int = 0, atol: float = 0.0,
              on_cut: Callable | None = None, bos_id: int = 1, leaks: bool = False,
              sweeps: int | None = None, check_len: int = 1024,
              doc_isolation: bool | None = None) -> AuditReport:
    """Evaluate `tokens` and `positions` randomised-suffix copies; see the module doc.
    `target_bytes_fn(tokens)` gives the byte tables' int64 bytes per target; `bos_id`
    marks the document starts, one of which is always cut. `leaks` adds the checks of
    golfeval.audit.checks (`sweeps` candidate sweeps on the first check_len + 1 tokens;
    document isolation when `doc_isolation` or the mode claims it)."""
    t0 = time.perf_counter()
    tokens = np.asarray(tokens).astype(np.int64)
    if tokens.size < 3:
        raise GolfError("the audit needs a stream of at least 3 tokens")
    rng = np.random.default_rng(seed)
    tb = np.asarray(target_bytes_fn(tokens), dtype=np.int64)
    base = mode.evaluate(tokens, tb)
    report = AuditReport(mode.name, int(tokens.size), int(base.scored_tokens))
    expected = mode.expected_scored(int(tokens.size))
    report.checks += check_accounting(base, tb, expected, "stream")
    if base.per_token_nats is None:
        report.seconds = time.perf_counter() - t0
        return report
    doc_starts = np.flatnonzero(tokens == bos_id)
    for cut, source in choose_cuts(tokens.size, mode.boundaries(tokens), positions, rng,
                                   documents=doc_starts):
        copy = tokens.copy()
        copy[cut + 1:] = rng.integers(0, vocab_size, copy.size - cut - 1)
        copy_tb = np.asarray(target_bytes_fn(copy), dtype=np.int64)
        other = mode.evaluate(copy, copy_tb)
        bad = [c for c in check_accounting(other, copy_tb, expected, f"cut {cut:,}")
               if not c.ok]
        report.checks += bad
        if other.per_token_nats is None:
            continue
        res = compare(base.per_token_nats, other.per_token_nats, cut, atol)
        res.source = source
        report.cuts.append(res)
        if on_cut is not None:
            on_cut(res)
    if leaks:
        from golfeval.audit.checks import leak_checks

        report.checks += leak_checks(mode, tokens, target_bytes_fn, vocab_size,
                                     seq_len=check_len, sweeps=sweeps, positions=positions,
                                     seed=seed, atol=atol, bos_id=bos_id,
                                     doc_isolation=doc_isolation)
    report.seconds = time.perf_counter() - t0
    return report
