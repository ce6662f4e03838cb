"""What a record's submission.json claims, normalised over the variants seen in the records
(mean or single score, per-seed tables in several shapes, tracks, byte totals)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path


def is_submission_name(name: str) -> bool:
    low = name.lower()
    return low.startswith("submission") and low.endswith(".json")


@dataclass
class Submission:
    """What submission.json claims, normalised over the variants seen in the records."""

    path: str
    claim_bpb: float | None = None
    claim_field: str | None = None
    claim_loss: float | None = None
    seeds: list = field(default_factory=list)
    seed_results: dict = field(default_factory=dict)  # seed -> {val_bpb, val_loss, ...}
    all_runs: dict = field(default_factory=dict)  # seed_results_all_runs_disclosure
    seed_scores: list = field(default_factory=list)
    std: float | None = None
    p_value: object = None
    t_statistic: float | None = None
    welch_df: float | None = None
    bytes_total: int | None = None
    bytes_code: int | None = None
    track: str | None = None
    name: str | None = None
    compliance_rerun: object = None
    problems: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _num(x) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, str):
        try:
            v = float(x.strip())
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None


def _seed_key(k) -> int | None:
    try:
        return int(str(k).strip().removeprefix("seed").strip("_- "))
    except ValueError:
        return None


def _per_seed(obj) -> dict:
    """{seed: {val_bpb, val_loss, artifact_bytes}} from a dict keyed by seed or a list."""
    out = {}
    items = obj.items() if isinstance(obj, dict) else (
        ((e.get("seed"), e) for e in obj if isinstance(e, dict)) if isinstance(obj, list) else ())
    for k, v in items:
        seed = _seed_key(k)
        if seed is None:
            continue
        if isinstance(v, dict):
            out[seed] = {"val_bpb": _num(v.get("val_bpb", v.get("bpb"))),
                         "val_loss": _num(v.get("val_loss")),
                         "artifact_bytes": _num(v.get("artifact_bytes", v.get("bytes_total")))}
        elif _num(v) is not None:
            out[seed] = {"val_bpb": _num(v), "val_loss": None, "artifact_bytes": None}
    return out


def parse_submission(data: dict, path: str = "submission.json") -> Submission:
    sub = Submission(path=path)
    for key in ("val_bpb", "mean_val_bpb", "val_bpb_mean"):
        if _num(data.get(key)) is not None:
            sub.claim_bpb, sub.claim_field = _num(data[key]), key
            break
    for key in ("val_loss", "mean_val_loss", "val_loss_mean"):
        if _num(data.get(key)) is not None:
            sub.claim_loss = _num(data[key])
            break
    if sub.claim_bpb is None and sub.claim_loss is not None:
        # Seen in a record: `val_loss` holding the bpb mean and no val_bpb at all.
        sub.claim_bpb, sub.claim_field, sub.claim_loss = sub.claim_loss, "val_loss", None
    seeds = data.get("seeds")
    if isinstance(seeds, list):
        sub.seeds = [s for s in (_seed_key(x) for x in seeds) if s is not None]
    elif isinstance(seeds, dict):
        sub.seed_results.update(_per_seed(seeds))
    for key in ("seed_results", "per_seed", "seed_metrics"):
        if key in data:
            sub.seed_results.update(_per_seed(data[key]))
    scores = data.get("seed_scores")
    if isinstance(scores, list):
        if all(_num(x) is not None for x in scores):
            sub.seed_scores = [_num(x) for x in scores]
        else:
            sub.seed_results.update(_per_seed(scores))
    elif isinstance(scores, dict):
        sub.seed_results.update(_per_seed(scores))
    if "seed_results_all_runs_disclosure" in data:
        sub.all_runs = _per_seed(data["seed_results_all_runs_disclosure"])
    if not sub.seeds and sub.seed_results:
        sub.seeds = sorted(sub.seed_results)
    sub.std = _num(data.get("val_bpb_std", data.get("std")))
    sub.p_value = data.get("p_value")
    sub.t_statistic = _num(data.get("t_statistic", data.get("t_stat")))
    sub.welch_df = _num(data.get("welch_df", data.get("df")))
    bt, bc = _num(data.get("bytes_total")), _num(data.get("bytes_code"))
    sub.bytes_total = int(bt) if bt is not None else None
    sub.bytes_code = int(bc) if bc is not None else None
    sub.track = normalise_track(data.get("track"))
    sub.name = data.get("name") if isinstance(data.get("name"), str) else None
    sub.compliance_rerun = data.get("compliance_rerun")
    if sub.claim_bpb is None:
        sub.problems.append(f"{os.path.basename(path)} names no val_bpb")
    return sub


def normalise_track(value) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    low = value.lower().replace("_", "-")
    if "non-record" in low or "nonrecord" in low or "unlimited" in low:
        return "non-record"
    return "record"


def load_submission(folder) -> Submission | None:
    folder = Path(folder)
    names = sorted((p for p in folder.iterdir() if p.is_file() and is_submission_name(p.name)),
                   key=lambda p: (p.name != "submission.json", p.name))
    if not names:
        return None
    path = names[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        sub = Submission(path=str(path))
        sub.problems.append(f"{path.name} is unreadable: {exc}")
        return sub
    if not isinstance(data, dict):
        sub = Submission(path=str(path))
        sub.problems.append(f"{path.name} is not a JSON object")
        return sub
    sub = parse_submission(data, str(path))
    if len(names) > 1:
        sub.problems.append(f"several submission files; read {path.name}, ignored "
                            + ", ".join(p.name for p in names[1:]))
    return sub
