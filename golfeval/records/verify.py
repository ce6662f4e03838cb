"""Does a record folder's logs support its claim? Recompute mean and sample std of the runs,
say whether the claimed val_bpb is their mean, the best run, one run, or nothing at all, and
flag broken limits (16,000,000 bytes, 600 s) and suspicious evidence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from golfeval.records.folders import RecordFolder, Run
from golfpack.errors import Note

TOLERANCE = 6e-5  # claim vs recomputed value, in bpb
BUDGET_BYTES = 16_000_000
TRAIN_LIMIT_MS = 600_000.0
VAL_BYTES = 151_077_000  # implied by every full-val run of the challenge's split
VAL_BYTES_REL_TOL = 1e-4
CLASSIFICATIONS = ("mean", "best-run", "single-run", "unsupported")


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1), summed in float64 with fsum."""
    vals = [float(v) for v in values]
    if not vals:
        return None, None
    m = math.fsum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    return m, math.sqrt(math.fsum((v - m) ** 2 for v in vals) / (len(vals) - 1))


# Echoed hyper-parameters that make two runs different experiments rather than two seeds.
STRUCTURAL_KEYS = ("train_seq_len", "train_batch_tokens", "iterations", "num_layers",
                   "model_dim", "vocab_size", "mlp_mult", "eval_seq_len", "eval_stride",
                   "sliding_eval_stride", "max_wallclock_seconds")


def config_key(run: Run) -> tuple:
    """Runs of the same configuration share this key (seeds aside)."""
    log = run.log
    return (log.tokenizer_id, log.val_tokens, log.model_params, log.label,
            next((m.stride for m in log.metrics if m.label == log.label), None),
            log.planned_steps, tuple(log.config.get(k) for k in STRUCTURAL_KEYS))


_KEY_NAMES = ("tokenizer", "val_tokens", "model_params", "label", "stride", "planned steps")


def config_differences(runs: list[Run]) -> list[str]:
    """Names of configuration fields that differ between the runs."""
    diffs = []
    keys = [config_key(r) for r in runs]
    for i, name in enumerate(_KEY_NAMES):
        if len({k[i] for k in keys}) > 1:
            diffs.append(name)
    if len({r.log.code_bytes for r in runs}) > 1:
        diffs.append("code_bytes")
    echoed = [r.log.config for r in runs if r.log.config]
    if len(echoed) > 1:
        for k in sorted(set().union(*echoed)):
            if k not in diffs and len({c.get(k) for c in echoed}) > 1:
                diffs.append(k)
    return diffs


@dataclass
class Match:
    classification: str
    support: list = field(default_factory=list)  # Run objects behind the claim
    detail: str = ""
    subset_flag: dict | None = None


def _flag(code: str, severity: str, message: str) -> dict:
    return {"code": code, "severity": severity, "message": message}


def classify_claim(claim: float | None, runs: list[Run], listed_seeds=(),
                   tol: float = TOLERANCE, value=lambda r: r.log.val_bpb) -> Match:
    """mean | best-run | single-run | unsupported for one claimed number."""
    done = [r for r in runs if value(r) is not None]
    if claim is None:
        return Match("unsupported", [], "no claimed val_bpb")
    if not done:
        return Match("unsupported", [], "no run has a final score")
    m, _ = mean_std(value(r) for r in done)
    if abs(claim - m) <= tol:
        if len(done) == 1:
            return Match("single-run", done, f"the only run, {done[0].name}")
        return Match("mean", done, f"mean of all {len(done)} runs")
    for label, subset, severity in _subsets(done, listed_seeds, value):
        if len(subset) >= 2 and abs(claim - mean_std(value(r) for r in subset)[0]) <= tol:
            flag = _flag("claim_subset", severity, f"the claim is the mean of {label}")
            return Match("mean", subset, f"mean of {label}", flag)
    close = sorted((r for r in done if abs(claim - value(r)) <= tol),
                   key=lambda r: abs(claim - value(r)))
    if not close:
        return Match("unsupported", [], "")
    hit = close[0]
    group = [r for r in done if config_key(r) == config_key(hit)]
    best = min(value(r) for r in group)
    if len(group) > 1 and value(hit) <= best + 1e-12:
        return Match("best-run", [hit], f"best of {len(group)} runs: {hit.name}")
    why = f"{hit.name}" + ("" if len(group) == 1 else
                           f", not the best of its {len(group)} runs (best {best:.8f})")
    return Match("single-run", [hit], why)


def _subsets(done: list[Run], listed_seeds, value):
    """Sub-samples a claim may average: the seeds submission.json lists, one configuration
    out of several, or the best k runs (cherry-picked)."""
    if listed_seeds:
        sub = [r for r in done if r.seed in set(listed_seeds)]
        if 0 < len(sub) < len(done):
            yield "the seeds listed in submission.json", sub, "info"
    groups: dict[tuple, list[Run]] = {}
    for r in done:
        groups.setdefault(config_key(r), []).append(r)
    if len(groups) > 1:
        for g in groups.values():
            yield f"the {len(g)} runs of one configuration ({g[0].name} ...)", g, "info"
    ranked = sorted(done, key=value)
    for k in range(len(done) - 1, 1, -1):
        yield f"the best {k} of {len(done)} runs", ranked[:k], "warning"


@dataclass
class Verification:
    folder: str
    name: str
    track: str | None
    claim: float | None
    claim_field: str | None
    classification: str
    detail: str
    support: list
    runs: list
    n: int
    mean: float | None
    std: float | None
    mean_val_loss: float | None
    flags: list
    counted: list = field(default_factory=list)  # the runs behind n / mean / std

    @property
    def ok(self) -> bool:
        return self.classification != "unsupported" and not any(
            f["severity"] == "error" for f in self.flags)

    def to_dict(self) -> dict:
        counted = {id(r) for r in self.counted}
        return {"folder": self.folder, "name": self.name, "track": self.track,
                "claim": self.claim, "claim_field": self.claim_field,
                "classification": self.classification, "detail": self.detail,
                "support": [r.name for r in self.support],
                "runs": [dict(r.to_dict(full=False), counted=id(r) in counted)
                         for r in self.runs], "n": self.n,
                "mean": self.mean, "std": self.std, "mean_val_loss": self.mean_val_loss,
                "flags": self.flags, "ok": self.ok}


def implied_val_bytes(run: Run) -> float | None:
    log = run.log
    if not (log.val_tokens and log.val_loss and log.val_bpb):
        return None
    return log.val_tokens * log.val_loss / (math.log(2) * log.val_bpb)


def verify_record(rec: RecordFolder, claim: float | None = None) -> Verification:
    """Classify the claim of one record folder and flag everything a reviewer should see."""
    sub = rec.submission
    claim_field = Note("`claim`", param="claim") if claim is not None else None
    if claim is None and sub is not None:
        claim, claim_field = sub.claim_bpb, sub.claim_field
    primary = rec.primary_runs()
    done = [r for r in primary if r.resolved]
    seeds = sub.seeds if sub else ()
    match = classify_claim(claim, done, seeds)
    flags: list[dict] = []
    if match.classification == "unsupported" and claim_field == "val_loss":
        by_loss = classify_claim(claim, done, seeds, value=lambda r: r.log.val_loss)
        if by_loss.classification != "unsupported":
            match = by_loss
            flags.append(_flag("claim_units", "warning", "the claimed number matches the runs' "
                               "val_loss (nats), not their val_bpb"))
    elif claim_field == "val_loss":
        flags.append(_flag("claim_field", "info", "submission.json has no val_bpb; its "
                           "val_loss holds the bpb claim"))
    if match.classification == "unsupported":
        alt = [r for r in rec.runs if r.resolved and r.superseded_by]
        if alt and claim is not None:
            other = classify_claim(claim, alt + [r for r in done if r.role != "rerun"], seeds)
            if other.classification != "unsupported":
                match = other
                flags.append(_flag("claim_originals", "warning", "the claim matches the "
                                   "original logs, not the reruns that replace them"))
    if match.subset_flag:
        flags.append(match.subset_flag)
    m, s = mean_std(r.log.val_bpb for r in done)
    ml, _ = mean_std(r.log.val_loss for r in done) if done and all(
        r.log.val_loss is not None for r in done) else (None, None)
    flags.extend(_flags(rec, claim, match, primary, done))
    return Verification(rec.path, rec.name, rec.track, claim, claim_field, match.classification,
                        match.detail, match.support, rec.runs, len(done), m, s, ml, flags,
                        done)


def _flags(rec: RecordFolder, claim, match: Match, primary, done) -> list[dict]:
    flags = []
    support = match.support or done
    in_support = {id(r) for r in support}
    record_track = rec.track != "non-record"
    if claim is None:
        what = "no claimed val_bpb (no submission.json val_bpb)"
        flags.append(_flag("no_claim", "error", Note(
            f"{what}; add val_bpb to submission.json or pass `claim`", param="claim",
            fallback=f"{what}; add val_bpb to submission.json")))
    elif match.classification == "unsupported":
        best = min((r.log.val_bpb for r in done), default=None)
        m, _ = mean_std(r.log.val_bpb for r in done)
        flags.append(_flag("unsupported", "error", f"claim {claim} matches no run, mean or "
                           f"subset within {TOLERANCE:g}" + (f" (mean {m:.8f}, best {best:.8f})"
                                                             if done else "")))
    for r in primary:
        where = "" if id(r) in in_support else " (not behind the claim)"
        tb = r.log.total_bytes
        if tb is not None and tb > BUDGET_BYTES:
            sev = "error" if id(r) in in_support else "warning"
            flags.append(_flag("over_budget", sev, f"{r.name}: total {tb:,} bytes > "
                               f"{BUDGET_BYTES:,}{where}"))
        t = r.log.train_time_ms
        slack = max(r.log.step_avg_ms or 0.0, 1000.0)
        if t is not None and t > TRAIN_LIMIT_MS + slack:
            sev = ("error" if id(r) in in_support else "warning") if record_track else "info"
            flags.append(_flag("train_time", sev, f"{r.name}: train time {t / 1000:.1f} s > 600 s"
                               + where + ("" if record_track else " (non-record track)")))
        if r.log.status == "ambiguous":
            cands = r.log.ambiguity[0]["candidates"] if r.log.ambiguity else []
            hit = [c for c in cands if claim is not None and abs(c["val_bpb"] - claim) <= TOLERANCE]
            msg = f"{r.name}: {r.log.reason}; left out" + (
                f" (the claim equals its {hit[0]['label']})" if hit else "")
            flags.append(_flag("ambiguous_run", "warning", msg))
        elif r.log.status == "no_final_metric":
            flags.append(_flag("no_final_metric", "info", f"{r.name}: {r.log.reason}"))
        for amb in r.log.ambiguity:
            if amb["field"] == "kind":
                flags.append(_flag("ambiguous_kind", "warning", f"{r.name}: {amb['reason']}"))
        for note in r.log.notes:
            if note.startswith("file name says seed"):
                flags.append(_flag("seed_conflict", "warning", f"{r.name}: {note}"))
        v = implied_val_bytes(r)
        if v is not None:
            rel = v / VAL_BYTES - 1.0
            tol = VAL_BYTES_REL_TOL + 0.5 * 10.0 ** -r.log.decimals / r.log.val_bpb + \
                0.5 * 10.0 ** -r.log.loss_decimals / r.log.val_loss
            if rel < -0.5:
                flags.append(_flag("partial_val", "info", f"{r.name}: implied val bytes "
                                   f"{v:,.0f}: not a full-validation run"))
            elif abs(rel) > tol:
                flags.append(_flag("val_bytes", "warning", f"{r.name}: implied val bytes "
                                   f"{v:,.0f} ({rel:+.3%} vs {VAL_BYTES:,}): a different val "
                                   "split or byte accounting"))
    if rec.submission and rec.submission.bytes_total and rec.submission.bytes_total > BUDGET_BYTES:
        flags.append(_flag("over_budget", "error", f"submission.json bytes_total "
                           f"{rec.submission.bytes_total:,} > {BUDGET_BYTES:,}"))
    if len(done) < 3:
        flags.append(_flag("few_runs", "warning", f"n = {len(done)} < 3 runs"))
    if len(done) > 1:
        diffs = config_differences(done)
        if diffs:
            shown = ", ".join(diffs[:8]) + (f" (+{len(diffs) - 8} more)" if len(diffs) > 8 else "")
            flags.append(_flag("config_mismatch", "warning",
                               f"runs differ in configuration: {shown}"))
        kinds = sorted({r.log.kind or "unknown" for r in done})
        if len(kinds) > 1:
            flags.append(_flag("eval_kinds", "warning", "runs use different evaluations: "
                               + ", ".join(kinds)))
        seeds = [r.seed for r in done if r.seed is not None]
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            flags.append(_flag("duplicate_seed", "warning", "several runs share seed "
                               + ", ".join(map(str, dup))))
    flags.extend(_seed_result_flags(rec, done))
    sub = rec.submission
    if sub and sub.all_runs and len(sub.all_runs) > len(match.support or done):
        flags.append(_flag("disclosed_runs", "info", f"submission.json discloses "
                           f"{len(sub.all_runs)} runs in all; the claim rests on "
                           f"{len(match.support or done)}"))
    if sub and sub.compliance_rerun:
        flags.append(_flag("compliance_rerun", "info", "submission.json carries a "
                           "compliance_rerun block: check that its logs are in the folder"))
    if rec.duplicates:
        flags.append(_flag("duplicates", "info", "counted once: " + "; ".join(
            f"{d['file']} = {d['same_as']}" for d in rec.duplicates)))
    for r in rec.runs:
        if r.superseded_by:
            flags.append(_flag("superseded", "info", f"{r.name} replaced by {r.superseded_by}"))
    for p in rec.problems:
        flags.append(_flag("folder", "warning", p))
    return flags


def _seed_result_flags(rec: RecordFolder, done: list[Run]) -> list[dict]:
    sub = rec.submission
    if not sub or not sub.seed_results:
        return []
    flags = []
    by_seed = {}
    for r in done:
        if r.seed is not None:
            by_seed.setdefault(r.seed, []).append(r)
    for seed, res in sorted(sub.seed_results.items()):
        want = res.get("val_bpb")
        if want is None:
            continue
        runs = by_seed.get(seed)
        if not runs:
            flags.append(_flag("seed_missing", "warning", f"submission.json seed {seed} "
                               f"({want}) has no log"))
        elif not any(abs(r.log.val_bpb - want) <= TOLERANCE for r in runs):
            flags.append(_flag("seed_mismatch", "warning", f"submission.json seed {seed}: "
                               f"{want} but the log says {runs[0].log.val_bpb}"))
    return flags
