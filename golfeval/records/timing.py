"""What one run spends evaluating, and the work it did after the training clock stopped.

Evaluation: every final-evaluation line that carries its own time (`eval_time:…ms`,
`elapsed=…s`) is one evaluation; prints of the same score (a rounded line and its `_exact`
copy, a TTT `:done` line and its summary) count once, with the longest time; diagnostic
evaluations (pre-quantization, post-EMA) are listed but not counted. TTT compile warm-ups
are listed, not counted: they compile on random tokens before the evaluation timer starts,
like the training script's own compile warm-up. A `total_eval_time` the
log prints is reported beside the sum.

After the clock: quantization calibration (GPTQ Hessians on training data) logged after
`stopping_early`, with the seconds the log gives and the reserve the run subtracted from
its training budget (`gptq:reserving Ns`), if any.
"""

from __future__ import annotations

import math

from golfeval.records.select import same_value

EVAL_LIMIT_S = 600.0


def eval_spend(log) -> dict:
    """{"seconds": sum or None, "parts": [{what, line, seconds, counted}]}."""
    parts = []
    groups: list[list] = []
    for m in log.metrics:
        own = m.extras and ("time" in m.extras or "elapsed" in m.extras)
        if m.eval_time_ms is None or not own or not math.isfinite(m.eval_time_ms):
            continue
        if m.kind == "diagnostic":
            parts.append({"what": m.label, "line": m.line, "seconds": m.eval_time_ms / 1000,
                          "counted": False})
            continue
        for g in groups:
            if same_value(g[0], m):
                g.append(m)
                break
        else:
            groups.append([m])
    for g in groups:
        top = max(g, key=lambda m: m.eval_time_ms)
        parts.append({"what": top.label, "line": top.line, "seconds": top.eval_time_ms / 1000,
                      "counted": True})
    for w in log.eval_extra:
        parts.append(dict(w))
    counted = [p["seconds"] for p in parts if p["counted"]]
    parts.sort(key=lambda p: p["line"])
    return {"seconds": math.fsum(counted) if counted else None, "parts": parts}


def post_clock_work(log) -> list[dict]:
    """[{what, line, seconds, reserved_s}] for calibration logged after the clock stopped."""
    return [dict(w, reserved_s=log.calib_reserve_s) for w in log.post_clock]
