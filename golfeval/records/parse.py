"""Line-level parsing of one Parameter Golf training log.

A log file holds one or more runs (some logs concatenate several, or print one run twice).
Per run we collect the seed echo, progress (train time, steps), sizes, val tokens, tokenizer
and every final-evaluation line; golfeval.records.select then picks the submitted score. Echoed
source code is skipped, unix-timestamp prefixes stripped, `:` / `=` / `: ` all accepted.
This module walks the file and assembles the runs; what each kind of line looks like and
sets is golfeval.records.loglines. Pure Python and fast: no torch, no numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from golfeval.records.loglines import (
    _CODE_START,
    _HP_ITEM,
    _PROGRESS,
    _PROGRESS_BPB,
    _SEED_ECHO,
    _STEP_AVG,
    _TIME,
    _TIME_MIN,
    _TIMESTAMP,
    _config,
    _dispatch,
)
from golfeval.records.select import (
    Context,
    Metric,
    choose,
)
from golfeval.records.sidelines import PREFIXES as SIDE_PREFIXES
from golfeval.records.sidelines import closest_line


@dataclass
class RunLog:
    """Everything one run of a log says about itself; `val_bpb` is the submitted metric."""

    index: int = 0
    first_line: int = 1
    last_line: int = 1
    echo_seed: int | None = None
    status: str = "ok"  # ok | ambiguous | no_final_metric
    reason: str | None = None
    val_loss: float | None = None
    val_bpb: float | None = None
    label: str | None = None
    kind: str | None = None
    decimals: int = 0  # printed precision of val_bpb / val_loss
    loss_decimals: int = 0
    ambiguity: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    train_time_ms: float | None = None
    steps: int | None = None
    planned_steps: int | None = None
    step_avg_ms: float | None = None
    stopped_early: bool = False
    eval_only: bool = False
    total_bytes: int | None = None
    compressor: str | None = None
    model_bytes: int | None = None
    code_bytes: int | None = None
    val_tokens: int | None = None
    tokenizer: str | None = None
    model_params: int | None = None
    byte_sidecar: bool = False
    code_plain: int | None = None  # `Code size: N` / `Code size (uncompressed): N`
    code_compressed: int | None = None  # `Code size (compressed): N`
    total_eval_s: float | None = None  # `total_eval_time:` as printed
    eval_extra: list = field(default_factory=list)  # TTT warm-ups: {what, line, seconds}
    post_clock: list = field(default_factory=list)  # calibration after the training clock
    calib_reserve_s: float | None = None  # seconds reserved from the training budget
    closest: dict | None = None  # {line, text}: nearest thing to a score when none is final
    last_progress_bpb: float | None = None
    harness: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def tokenizer_id(self) -> str | None:
        """Tokenizer identity for comparisons: the model file's base name, or `byte260`."""
        if not self.tokenizer:
            return None
        return self.tokenizer.replace("\\", "/").rsplit("/", 1)[-1]

    def to_dict(self, config: bool = True) -> dict:
        d = {k: getattr(self, k) for k in (
            "index", "first_line", "last_line", "echo_seed", "status", "reason", "val_loss",
            "val_bpb", "label", "kind", "ambiguity", "train_time_ms", "steps", "planned_steps",
            "step_avg_ms", "stopped_early", "eval_only", "total_bytes", "compressor",
            "model_bytes", "code_bytes", "val_tokens", "tokenizer", "model_params",
            "byte_sidecar", "code_plain", "code_compressed", "total_eval_s", "eval_extra",
            "post_clock", "calib_reserve_s", "closest", "harness", "notes")}
        d["metrics"] = [m.to_dict() for m in self.metrics]
        if config:
            d["config"] = dict(self.config)
        return d


class _Run:
    """Accumulates one run while lines stream past."""

    def __init__(self, index: int, line: int, lines: list[str]):
        self.log = RunLog(index=index, first_line=line, last_line=line)
        self.lines = lines  # the whole file, for rare look-backs
        self.finals: list[Metric] = []
        self.other_lines: list[Metric] = []
        self.announced: tuple[int, str] | None = None
        self.last_progress: str | None = None  # raw last progress line
        self.last_timed = None
        self.last_avg = None
        self.last_val = None
        self.last_val_line = 0
        self.in_header = True
        self.untagged_total: int | None = None
        self.code_plain: int | None = None
        self.loose: tuple[int, str] | None = None  # last line naming a bpb in its own words

    @property
    def started(self) -> bool:
        return self.last_progress is not None or bool(self.finals) or bool(self.other_lines) \
            or self.loose is not None

    def mentions_ttt(self) -> bool:
        """Whether any non-indented line of this run talks about test-time training."""
        span = self.lines[self.log.first_line - 1:self.log.last_line]
        return any("ttt" in ln and ln[:1] not in (" ", "\t") for ln in span)


def _detect_timestamps(lines: list[str]) -> bool:
    sample = []
    for ln in lines:
        if ln and not ln.isspace():
            sample.append(ln)
            if len(sample) == 40:
                break
    hits = sum(1 for ln in sample if (ln[0].isdigit() or ln[0] == "[") and _TIMESTAMP.match(ln))
    return bool(sample) and hits >= 0.6 * len(sample)


# After the header only lines that contain "val_" or start like this can matter; everything
# else (TTT progress, warm-up steps, nvidia-smi tables) is dropped with two C-level checks.
_LATE_PREFIXES = ("Total submission", "Serialized model", "Code size", "stopping_early",
                  "final_eval_mode", "budget:", "artifact", "using:", "valid:", "seed",
                  "Hyperparameters", "--- Hyperparameters") + SIDE_PREFIXES
_NOISE_START = frozenset("|+W[*")
_WARMUP = ("warmup", "loop_warmup")


def _is_separator(line: str) -> bool:
    return line.startswith("=====") and not line.strip().strip("=")


def _skip_code(it, strip_ts: bool) -> bool:
    """Consume echoed source code up to the next separator line; False if none came."""
    if strip_ts:
        for _, line in it:
            if _is_separator(_TIMESTAMP.sub("", line, count=1)):
                return True
        return False
    for _, line in it:
        if line.startswith("=====") and not line.strip().strip("="):
            return True
    return False


def parse_text(text: str, skip_code: bool = True) -> list[RunLog]:
    """Parse the text of one log file into its runs (usually one)."""
    lines = text.splitlines()
    strip_ts = _detect_timestamps(lines)
    runs: list[_Run] = []
    cur = _Run(0, 1, lines)
    in_hparams = code_open = False
    it = iter(enumerate(lines, 1))
    for lineno, line in it:
        if strip_ts:
            line = _TIMESTAMP.sub("", line, count=1)
        if not line:
            continue
        c0 = line[0]
        if c0 == " " or c0 == "\t":
            if in_hparams and cur.in_header:
                m = _HP_ITEM.match(line)
                if m:
                    _config(cur, m.group(1), m.group(2).strip())
            continue
        in_hparams = False
        if c0 in _NOISE_START:
            continue
        if c0 == "s" or "0" <= c0 <= "9":
            if "/" in line[:18] and (c0 != "s" or line.startswith("step:")):
                # A progress line: keep it raw, parse only the last ones at the end.
                cur.in_header = False
                cur.last_progress = line
                if "time" in line or " t:" in line:
                    cur.last_timed = line
                if "avg" in line:
                    cur.last_avg = line
                if "val_bpb" in line:
                    cur.last_val, cur.last_val_line = line, lineno
                cur.log.last_line = lineno
                continue
        elif skip_code and (line.startswith(_CODE_START) or (
                line.startswith("from ") and " import " in line)):
            if cur.started:
                runs.append(cur)
                cur = _Run(len(runs), lineno, lines)
            code_open = not _skip_code(it, strip_ts)
            continue
        if c0 == "#" or "{" in line:
            continue
        if c0 == "=" and _is_separator(line):
            continue
        if cur.in_header:
            if line.startswith(_WARMUP):
                continue
        elif "val_" not in line and not line.startswith(_LATE_PREFIXES) and \
                "bpb" not in line and "BPB" not in line:
            continue
        line = line.rstrip()
        if line.startswith(("Hyperparameters:", "--- Hyperparameters", "val_bpb:enabled")) or \
                (c0 == "s" and _SEED_ECHO.match(line)):
            if cur.started:
                runs.append(cur)
                cur = _Run(len(runs), lineno, lines)
            in_hparams = line.startswith("Hyperparameters:")
        cur.log.last_line = lineno
        _dispatch(cur, line, lineno)
    runs.append(cur)
    if code_open and not any(r.finals for r in runs):
        out = parse_text(text, skip_code=False)
        for r in out:
            r.notes.append("echoed code not closed by a separator line; every line was read")
        return out
    kept = [r for r in runs if r.started or r.log.echo_seed is not None or r.log.config]
    if len(kept) > 1:  # a header-only fragment before the real run is not a run
        kept = [r for r in kept if r.started] or kept[-1:]
    result = []
    for i, r in enumerate(kept or runs[-1:]):
        r.log.index = i
        result.append(_finish(r))
    return result


def _finish(cur: _Run) -> RunLog:
    log = cur.log
    prog = _PROGRESS.match(cur.last_progress) if cur.last_progress else None
    if prog:
        log.steps = log.steps if log.steps is not None else int(prog.group(1))
        log.planned_steps = log.planned_steps or int(prog.group(2))
    if cur.last_timed and log.train_time_ms is None:
        t = _TIME.search(cur.last_timed)
        if t:
            log.train_time_ms = float(t.group(1))
        else:
            t = _TIME_MIN.search(cur.last_timed)
            log.train_time_ms = float(t.group(1)) * 60_000.0 if t else None
    if cur.last_avg:
        a = _STEP_AVG.search(cur.last_avg)
        log.step_avg_ms = float(a.group(1)) if a else None
    if log.step_avg_ms is None and log.train_time_ms and log.steps:
        log.step_avg_ms = log.train_time_ms / log.steps
    if cur.last_val:
        m = _PROGRESS_BPB.search(cur.last_val)
        log.last_progress_bpb = float(m.group(1)) if m else None
    if log.total_bytes is None and cur.untagged_total is not None:
        log.total_bytes = cur.untagged_total
        log.notes.append("only an untagged total size was printed (it may be the raw checkpoint)")
    if log.code_bytes is None:
        log.code_bytes = cur.code_plain
    log.eval_only = cur.last_progress is None and bool(cur.finals)
    ctx = Context(announced=cur.announced, last_progress_bpb=log.last_progress_bpb,
                  harness=log.harness, mentions_ttt=cur.mentions_ttt)
    choice = choose(cur.finals, cur.other_lines, ctx)
    log.metrics = cur.finals + cur.other_lines
    log.status, log.ambiguity, log.kind = choice.status, choice.ambiguity, choice.kind
    log.notes.extend(choice.notes)
    if choice.metric is not None:
        m = choice.metric
        log.val_bpb, log.val_loss, log.label = m.val_bpb, m.val_loss, m.label
        log.decimals, log.loss_decimals = m.decimals, m.loss_decimals
    elif choice.reason:
        log.reason = choice.reason
    elif prog:
        log.reason = (f"no final evaluation line: the log stops at step "
                      f"{prog.group(1)}/{prog.group(2)} (line {log.last_line})")
    else:
        log.reason = "no final evaluation line"
    if choice.metric is None:
        log.closest = _closest(cur)
        if log.closest:
            log.reason = (f"no final score; closest line {log.closest['line']}: "
                          f"{log.closest['text']}" + (f" ({log.reason})" if log.reason else ""))
    return log


def _closest(cur: _Run) -> dict | None:
    cands = [cur.loose] if cur.loose else []
    cands += [(m.line, cur.lines[m.line - 1]) for m in cur.finals + cur.other_lines]
    if cur.last_val:
        cands.append((cur.last_val_line, cur.last_val))
    return closest_line(cands, lambda t: _TIMESTAMP.sub("", t, count=1))


