"""Is a new result significantly better than the state of the art?

One-sided tests on per-run val_bpb (H1: the new mean is lower): Welch's two-sample t-test with
Welch-Satterthwaite degrees of freedom, with and without the README margin (0.005 nats turned
into bpb through the new runs' bpb per nat), and a one-sample test against a fixed SOTA value.
Verdicts follow the README rule (margin, p < alpha) and the maintainers' later frontier rule
(no margin, p < 0.25). scipy is imported only here, and only when a test runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from golfeval.records.folders import find_record_folders, read_folder, read_log_file
from golfeval.records.verify import config_key, mean_std, verify_record
from golfpack.errors import GolfError, Note

T_CONVENTION = "t = (mean(new) - mean(old) + margin) / se: negative when NEW is better"
README_MARGIN_NATS = 0.005
README_ALPHA = 0.01
FRONTIER_ALPHA = 0.25


@dataclass
class Sample:
    """Per-run scores of one side of a comparison (several sources pool)."""

    name: str
    bpb: list = field(default_factory=list)
    loss: list = field(default_factory=list)  # None where unknown (plain values)
    runs: list = field(default_factory=list)  # names, for the report
    tokenizers: set = field(default_factory=set)
    kinds: set = field(default_factory=set)
    notes: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.bpb)

    def bpb_per_nat(self) -> float | None:
        """Mean of val_bpb / val_loss over runs that print both (1 / (ln2 * bytes per token))."""
        ratios = [b / v for b, v in zip(self.bpb, self.loss, strict=True) if v]
        return math.fsum(ratios) / len(ratios) if ratios else None

    def summary(self) -> dict:
        m, s = mean_std(self.bpb)
        losses = [v for v in self.loss if v is not None]
        ml = mean_std(losses)[0] if len(losses) == len(self.loss) and losses else None
        return {"name": self.name, "n": self.n, "mean": m, "std": s, "mean_val_loss": ml,
                "values": list(self.bpb), "runs": list(self.runs),
                "tokenizers": sorted(self.tokenizers), "kinds": sorted(self.kinds),
                "notes": list(self.notes)}


def _values(spec: str) -> list[float] | None:
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        return None
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        return None
    return vals


def _folder_runs(path: str, sample: Sample):
    """The runs a record folder stands for: the claim's runs when the claim is a mean,
    otherwise every run of the claimed run's configuration."""
    rec = read_folder(path)
    v = verify_record(rec)
    done = [r for r in rec.primary_runs() if r.resolved]
    if v.classification == "mean":
        runs = v.support
    elif v.support:
        key = config_key(v.support[0])
        runs = [r for r in done if config_key(r) == key]
        sample.notes.append(f"{rec.name}: the claim is {v.classification}; " + (
            f"testing all {len(runs)} runs of its configuration" if len(runs) > 1 else
            f"only {runs[0].name} has its configuration"))
    else:
        runs = done
    left_out = [r.name for r in rec.primary_runs() if not r.resolved]
    if left_out:
        sample.notes.append(f"{rec.name}: left out (no unambiguous score): "
                            + ", ".join(left_out))
    return [(f"{rec.name}/{r.name}", r) for r in runs]


def load_sample(specs, name: str) -> Sample:
    """Pool runs from record folders, log files and comma-separated bpb values."""
    sample = Sample(name=name)
    for spec in specs:
        vals = _values(spec)
        if vals is not None and not os.path.exists(spec):
            sample.bpb.extend(vals)
            sample.loss.extend([None] * len(vals))
            sample.runs.extend(f"value {v}" for v in vals)
            continue
        if os.path.isdir(spec):
            folders = find_record_folders(spec)
            if len(folders) != 1 or os.path.realpath(folders[0]) != os.path.realpath(spec):
                raise GolfError(f"{spec} is not a record folder (it holds {len(folders)}); "
                                "name the folders one by one")
            runs = _folder_runs(spec, sample)
        elif os.path.isfile(spec):
            rec = read_log_file(spec)
            runs = [(r.name, r) for r in rec.runs if r.resolved]
        else:
            raise GolfError(f"{spec}: not a record folder, a log file or comma-separated values")
        if not runs:
            raise GolfError(f"{spec}: no run with an unambiguous final score")
        for rname, r in runs:
            sample.bpb.append(r.log.val_bpb)
            sample.loss.append(r.log.val_loss)
            sample.runs.append(rname)
            if r.log.tokenizer_id:
                sample.tokenizers.add(r.log.tokenizer_id)
            sample.kinds.add(r.log.kind or "unknown")
    return sample


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def welch(new, old, delta: float = 0.0) -> dict:
    """One-sided Welch test of H1: mean(new) < mean(old) - delta. t is reported for
    mean(new) - (mean(old) - delta), the maintainers' sign: negative favours new."""
    from scipy import stats

    n1, n2 = len(new), len(old)
    if n1 < 2 or n2 < 2:
        raise GolfError("Welch's test needs at least 2 runs on each side")
    m1, s1 = mean_std(new)
    m2, s2 = mean_std(old)
    a, b = s1 * s1 / n1, s2 * s2 / n2
    diff = m2 - delta - m1
    if a + b == 0.0:
        return {"t": None, "df": None, "p": 0.0 if diff > 0 else 1.0,
                "note": "both samples have zero spread"}
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    t = diff / math.sqrt(a + b)
    return {"t": -t, "df": df, "p": float(stats.t.sf(t, df))}


def one_sample(new, value: float, delta: float = 0.0) -> dict:
    """One-sided one-sample test of H1: mean(new) < value - delta; t for
    mean(new) - (value - delta), negative when new is better."""
    from scipy import stats

    n = len(new)
    if n < 2:
        raise GolfError("a one-sample t-test needs at least 2 runs")
    m, s = mean_std(new)
    diff = value - delta - m
    if s == 0.0:
        return {"t": None, "df": n - 1, "p": 0.0 if diff > 0 else 1.0,
                "note": "the runs have zero spread"}
    t = diff / (s / math.sqrt(n))
    return {"t": -t, "df": n - 1, "p": float(stats.t.sf(t, n - 1))}


def compare(new: Sample, old: Sample | None = None, sota_bpb: float | None = None,
            margin_nats: float = README_MARGIN_NATS, alpha: float = README_ALPHA,
            frontier_alpha: float = FRONTIER_ALPHA, bpb_per_nat: float | None = None) -> dict:
    """Every test and both verdicts for NEW against OLD runs and/or a fixed SOTA value."""
    if old is None and sota_bpb is None:
        raise GolfError("give the state of the art: `old=OLD` or `sota_bpb=X`",
                        param=("old", "sota_bpb"))
    if not 0.0 < alpha < 1.0 or not 0.0 < frontier_alpha < 1.0:
        raise GolfError("alpha must lie strictly between 0 and 1")
    if margin_nats < 0:
        raise GolfError("`margin_nats` must be >= 0", param="margin_nats")
    warnings = list(new.notes) + (list(old.notes) if old else [])
    if old is not None and old.n == 1:
        if sota_bpb is None:
            warnings.append("OLD has a single run: tested as a fixed value (one-sample test)")
            sota_bpb = old.bpb[0]
        else:
            warnings.append(Note("OLD has a single run: no Welch test, only the one-sample "
                                 "test against `sota_bpb`", param="sota_bpb"))
        old = None
    for s in (new, old):
        if s is not None and s.n < 3:
            warnings.append(f"{s.name} has n = {s.n} < 3 runs")
    ratio_src = Note("`bpb_per_nat`", param="bpb_per_nat")
    if bpb_per_nat is None:
        bpb_per_nat, ratio_src = new.bpb_per_nat(), "the new runs"
    if bpb_per_nat is None and old is not None and old.bpb_per_nat() is not None:
        bpb_per_nat, ratio_src = old.bpb_per_nat(), "the old runs"
        warnings.append("margin converted through the OLD runs' bpb per nat (NEW has no "
                        "val_loss)")
    margin_bpb = (margin_nats * bpb_per_nat if bpb_per_nat is not None else
                  (0.0 if margin_nats == 0 else None))
    if margin_bpb is None and margin_nats > 0:
        what = "cannot convert the margin to bpb (no val_loss)"
        warnings.append(Note(f"{what}: pass `bpb_per_nat` (on the challenge's val split: "
                             "0.592 sp1024, 0.434 sp4096, 0.388 sp8192), or use "
                             "`rule=frontier` (no margin)", param=("bpb_per_nat", "rule"),
                             fallback=f"{what}: use `rule=frontier` (no margin), or give "
                             "the runs' logs their val_loss lines"))
    if old is not None:
        if new.tokenizers and old.tokenizers and new.tokenizers != old.tokenizers:
            warnings.append("different tokenizers (" + ", ".join(sorted(new.tokenizers)) +
                            " vs " + ", ".join(sorted(old.tokenizers)) +
                            "): nats per token are not comparable, only bpb")
        if new.kinds and old.kinds and new.kinds != old.kinds:
            warnings.append("different eval kinds: " + "/".join(sorted(new.kinds)) + " vs " +
                            "/".join(sorted(old.kinds)))
    if "unknown" in new.kinds or (old and "unknown" in old.kinds):
        warnings.append("the eval kind of some runs is unknown (ambiguous log label)")
    m_new = mean_std(new.bpb)[0]
    ref = mean_std(old.bpb)[0] if old is not None else sota_bpb
    out = {"new": new.summary(), "old": old.summary() if old else None, "sota_bpb": sota_bpb,
           "margin_nats": margin_nats, "bpb_per_nat": bpb_per_nat,
           "bpb_per_nat_from": ratio_src if bpb_per_nat is not None else None,
           "margin_bpb": margin_bpb, "delta_bpb": m_new - ref,
           "delta_nats": _delta_nats(new, old, m_new - ref, bpb_per_nat),
           "alpha": alpha, "frontier_alpha": frontier_alpha, "t_convention": T_CONVENTION,
           "welch": None, "welch_margin": None, "one_sample": None, "one_sample_margin": None}
    if old is not None:
        out["welch"] = welch(new.bpb, old.bpb)
        if margin_bpb is not None:
            out["welch_margin"] = dict(welch(new.bpb, old.bpb, margin_bpb), margin_bpb=margin_bpb)
    if sota_bpb is not None:
        out["one_sample"] = one_sample(new.bpb, sota_bpb)
        if margin_bpb is not None:
            out["one_sample_margin"] = dict(one_sample(new.bpb, sota_bpb, margin_bpb),
                                            margin_bpb=margin_bpb)
    plain, margin = ("welch", "welch_margin") if old is not None else ("one_sample",
                                                                       "one_sample_margin")
    out["verdicts"] = {
        "readme": _verdict(out[margin], alpha, margin,
                           f">= {margin_nats} nats better at p < {alpha}"),
        "frontier": _verdict(out[plain], frontier_alpha, plain,
                             f"better at p < {frontier_alpha}, no margin")}
    for key in ("welch", "welch_margin", "one_sample", "one_sample_margin"):
        if out[key]:
            out[key] = {k: (_finite(v) if isinstance(v, float) else v) for k, v in out[key].items()}
    out["warnings"] = warnings
    return out


def _delta_nats(new: Sample, old: Sample | None, delta_bpb: float, ratio) -> float | None:
    if old is not None and all(v is not None for v in new.loss + old.loss) and \
            new.tokenizers == old.tokenizers:
        return mean_std(new.loss)[0] - mean_std(old.loss)[0]
    return delta_bpb / ratio if ratio else None


def _verdict(test: dict | None, threshold: float, name: str, rule: str) -> dict:
    if test is None:
        return {"significant": None, "test": name, "p": None, "threshold": threshold,
                "rule": rule}
    return {"significant": bool(test["p"] < threshold), "test": name, "p": test["p"],
            "threshold": threshold, "rule": rule}


def seeds_needed(delta: float, std: float, alpha: float = README_ALPHA, power: float = 0.8,
                 design: str = "welch", old_n: int | None = None, max_n: int = 200) -> dict:
    """Smallest number of new runs whose one-sided test reaches `power` when the true mean
    improvement is `delta` bpb and every run has standard deviation `std` (noncentral t).

    design "welch": new runs vs `old_n` SOTA runs (default: as many as the new side), Welch df;
    design "one-sample": new runs vs a fixed value, df = n - 1.
    """
    from scipy import stats

    if delta <= 0 or std <= 0:
        raise GolfError("`delta` and `std` must be > 0", param=("delta", "std"))
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise GolfError("`alpha` and `power` must lie strictly between 0 and 1",
                        param=("alpha", "power"))
    if design not in ("welch", "one-sample"):
        raise GolfError(f"unknown design {design!r}")
    if old_n is not None and old_n < 2:
        raise GolfError("`old_n` must be >= 2", param="old_n")
    table = []
    for n in range(2, max_n + 1):
        if design == "one-sample":
            df, se = n - 1, std / math.sqrt(n)
        else:
            m = old_n or n
            a, b = std * std / n, std * std / m
            df, se = (a + b) ** 2 / (a * a / (n - 1) + b * b / (m - 1)), math.sqrt(a + b)
        crit = float(stats.t.ppf(1 - alpha, df))
        pw = float(stats.nct.sf(crit, df, delta / se))
        table.append({"n": n, "df": df, "power": pw})
        if pw >= power:
            break
    reached = table[-1]["power"] >= power
    return {"design": design, "delta": delta, "std": std, "alpha": alpha, "power_target": power,
            "old_n": (old_n if design == "welch" else None), "n": table[-1]["n"] if reached
            else None, "power": table[-1]["power"], "table": table,
            "note": None if reached else f"power {power} not reached with {max_n} runs"}
