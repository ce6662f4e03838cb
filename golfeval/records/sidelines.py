"""Lines beside a run's score that a review needs: the evaluation total a log prints, TTT
compile warm-ups, quantization calibration after the training clock stopped (and the time a
run reserved for it), and lines that name a bpb in their own words (the closest thing to a
score when a run prints no final line)."""

from __future__ import annotations

import re

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TOTAL_EVAL = re.compile(r"^total_eval_time\s*[:=]\s*(\d+(?:\.\d+)?)\s*(ms|s)\b")
_DURATION = re.compile(r"(?:\bin\s+|\(|\btook\s+|\bdone\s+)(\d+(?:\.\d+)?)\s*(ms|s)\b")
_ANY_DURATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(ms|s)\b")
_RESERVE = re.compile(r"^gptq:reserv\w*\s+(\d+(?:\.\d+)?)\s*s\b", re.I)
_CALIB_START = ("gptq", "calib", "hessian", "quantiz")
_LOOSE_BPB = re.compile(rf"(?:\b|_)bpb\b\s*[:=]?\s*({_NUM})", re.I)
# Line starts the parser must let through after a run's header for timing_line to see them.
PREFIXES = ("total_eval", "ttt_lora:compile", "GPTQ", "gptq", "calib", "Calib", "Hessian",
            "hessian", "Quantiz", "quantiz")


def _seconds(m) -> float:
    return float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)


def timing_line(log, line: str, lineno: int, after_clock: bool) -> bool:
    """Record a timing line on `log` (a RunLog); True when the line was one."""
    if line.startswith("total_eval"):
        m = _TOTAL_EVAL.match(line)
        if m:
            log.total_eval_s = _seconds(m)
        return True
    if line.startswith("ttt_lora:compile") or (line.startswith("ttt") and "warm" in line):
        d = _DURATION.search(line)
        if d and "done" in line:
            log.eval_extra.append({"what": "TTT compile warm-up", "line": lineno,
                                   "seconds": _seconds(d), "counted": False})
        return True
    if line[:8].lower().startswith(_CALIB_START):
        r = _RESERVE.match(line)
        if r:
            log.calib_reserve_s = float(r.group(1))
            return True
        d = (_DURATION.search(line) or _ANY_DURATION.search(line)) if after_clock else None
        if d:
            log.post_clock.append({"what": line.split(":", 1)[0] + " calibration",
                                   "line": lineno, "seconds": _seconds(d), "text": line[:160]})
            return True
    return False


def names_bpb(line: str) -> bool:
    """A line that names a bpb value in its own words (`test bpb = 1.41`, `BPB: 1.2`)."""
    return ("bpb" in line or "BPB" in line) and _LOOSE_BPB.search(line) is not None


def closest_line(cands: list[tuple[int, str]], clean=lambda t: t) -> dict | None:
    """The last of the candidate (line number, text) pairs, as {"line", "text"}."""
    if not cands:
        return None
    line, text = max(cands, key=lambda c: c[0])
    return {"line": line, "text": clean(text.strip())[:200]}
