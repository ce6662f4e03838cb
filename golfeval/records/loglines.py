"""The line grammars of a training log: what each kind of line looks like (final
evaluations, progress, sizes, the hyperparameter header, harness key: value lines) and what
it sets in the run being read. golfeval.records.parse walks a file and assembles the runs.
Pure Python: no torch, no numpy."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from golfeval.records.select import (
    decimals,
    is_known_label,
    metric_from_line,
)
from golfeval.records.sidelines import names_bpb, timing_line

if TYPE_CHECKING:
    from golfeval.records.parse import RunLog, _Run

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_FINAL = re.compile(rf"^(?P<pre>.*?)\bval_loss\s*[:=]\s*(?P<loss>{_NUM})\s*(?:sliding\s+)?"
                    rf"val_bpb\s*[:=]\s*(?P<bpb>{_NUM})(?P<post>.*)$")
_BPB_ONLY = re.compile(rf"^(?P<pre>\S.*?)\s+val_bpb\s*[:=]\s*(?P<bpb>{_NUM})(?P<post>.*)$")
_HARNESS = re.compile(rf"^(val_bpb|artifact_bytes|valid)\s*:\s+({_NUM}|true|false)\s*$")
_PROGRESS = re.compile(r"^(?:step:\s*)?(\d+)/(\d+)\s(.*)$")
_PROGRESS_BPB = re.compile(rf"val_bpb\s*[:=]\s*({_NUM})")
_TIME = re.compile(r"(?:\btrain_time|\bt)\s*[:=]\s*(\d+(?:\.\d+)?)\s*ms")
_TIME_MIN = re.compile(r"\btrain_time\s*[:=]\s*(\d+(?:\.\d+)?)\s*m\b")
_STEP_AVG = re.compile(r"(?:\bstep_avg|\bavg)\s*[:=]\s*(\d+(?:\.\d+)?)\s*ms")
_STOP_STEP = re.compile(r"\bstep\s*:\s*(\d+)(?:/(\d+))?")
_TOTAL = re.compile(r"^Total submission size(?:\s+(?P<tag>[^:]+?))?\s*:\s*(?P<n>\d+)\s*bytes")
_MODEL = re.compile(r"^Serialized model(?:\s+(?P<tag>[^:]+?))?\s*:\s*(?P<n>\d+)\s*bytes")
_CODE = re.compile(r"^Code size(?:\s*\((?P<q>[^)]*)\))?\s*:\s*(?P<n>\d+)\s*bytes")
_BUDGET = re.compile(r"^budget:\s*(\d+)/(\d+)")
_ART_CODE = re.compile(r"^artifact:.*\bcode:(\d+)")
_VAL_TOKENS = re.compile(r"^(?:val_loader:.*\btokens:\s*|val_tokens\s*[:=]\s*)(\d+)")
_TOKENIZER = re.compile(r"\btokenizer_path\s*[:=]\s*(\S+)")
_TOKENIZER_KIND = re.compile(r"\btokenizer_kind\s*=\s*(\S+)(?:.*\bvocab_size\s*=\s*(\d+))?")
_SEED_ECHO = re.compile(r"^seed\s*[:=]\s*(\d+)\s*$")
_PARAMS = re.compile(r"(?:^|\s)(?:model_)?params:(\d+)")
_HP_ITEM = re.compile(r"^\s+([A-Za-z_]\w*):\s?(.*)$")
_KV = re.compile(r"^([A-Za-z_][\w.]*)[:=](\S*)$")
_TIMESTAMP = re.compile(r"^\[?\d{10,13}(?:\.\d+)?\]?(?:\s*[|:-])?\s+")
_CODE_START = ('"""', "'''", "import ", "def ", "class ", "async def ", "#!", "@")
# Per-run config keys that differ between seeds by design (or hold machine paths).
_VOLATILE = {"seed", "run_id", "logfile", "rank", "local_rank", "is_main_process", "pattern",
             "artifact_dir", "model_path", "quantized_model_path", "checkpoint_dir",
             "eval_only_path", "eggroll_load", "s"}


def _config(cur: _Run, key: str, value: str) -> None:
    if key == "seed" and value.isdigit():
        cur.log.echo_seed = int(value)
    elif key == "tokenizer_path" and value:
        cur.log.tokenizer = value
    if key not in _VOLATILE and "/" not in value and not key.endswith(("_path", "_dir", "_files")):
        cur.log.config[key] = value


def _dispatch(cur: _Run, line: str, lineno: int) -> None:
    log = cur.log
    if "val_bpb" in line or "val_loss" in line:
        m = _FINAL.match(line)
        if m:
            _final(cur, m.group("pre"), m.group("loss"), m.group("bpb"), m.group("post"), lineno)
            return
        m = _HARNESS.match(line)
        if m:
            _harness(log, m.group(1), m.group(2))
            return
        if line.startswith("val_bpb:enabled"):
            m = _TOKENIZER.search(line)
            if m:
                log.tokenizer = m.group(1)
            else:
                k = _TOKENIZER_KIND.search(line)
                if k:
                    log.tokenizer = k.group(1) + (k.group(2) or "")
            return
        if line.startswith("val_bpb:byte_sidecar"):
            log.byte_sidecar = "enabled" in line
            return
        m = _BPB_ONLY.match(line)
        if m and is_known_label(m.group("pre").split()[0]):
            _final(cur, m.group("pre"), None, m.group("bpb"), m.group("post"), lineno)
            return
    if line.startswith("Total submission size"):
        m = _TOTAL.match(line)
        if m:
            n, tag = int(m.group("n")), (m.group("tag") or "").strip()
            if tag and log.compressor is None:
                log.total_bytes, log.compressor = n, tag
            elif not tag:
                cur.untagged_total = n
        return
    if line.startswith("Serialized model"):
        m = _MODEL.match(line)
        if m and (m.group("tag") or "").strip():
            log.model_bytes = int(m.group("n"))
        return
    if line.startswith("Code size"):
        m = _CODE.match(line)
        if m:
            q = (m.group("q") or "").lower()
            if "uncompressed" in q or "raw" in q or not q:
                cur.code_plain = log.code_plain = int(m.group("n"))
                if not q:
                    log.code_bytes = int(m.group("n"))
            else:
                log.code_bytes = log.code_compressed = int(m.group("n"))
        return
    if line.startswith("stopping_early"):
        log.stopped_early = True
        t = _TIME.search(line)
        if t:
            log.train_time_ms = float(t.group(1))
        s = _STOP_STEP.search(line)
        if s:
            log.steps = int(s.group(1))
            if s.group(2):
                log.planned_steps = int(s.group(2))
        return
    if line.startswith("final_eval_mode"):
        cur.announced = (lineno, line.split(None, 1)[0].partition(":")[2] or line)
        return
    m = _VAL_TOKENS.match(line)
    if m:
        log.val_tokens = int(m.group(1))
        return
    if timing_line(log, line, lineno, after_clock=log.stopped_early or not cur.in_header):
        return
    if line.startswith("budget:"):
        m = _BUDGET.match(line)
        if m:
            log.total_bytes = int(m.group(1))
        return
    if line.startswith("artifact:"):
        m = _ART_CODE.match(line)
        if m:
            log.code_bytes = int(m.group(1))
        return
    if line.startswith("using:") and log.compressor is None:
        log.compressor = line.partition(":")[2].strip() or None
        return
    m = _SEED_ECHO.match(line)
    if m:
        log.echo_seed = int(m.group(1))
        return
    m = _PARAMS.search(line)
    if m and log.model_params is None and ("params:" in line.split()[0] or "|" in line):
        log.model_params = int(m.group(1))
    m = _HARNESS.match(line)
    if m:
        _harness(log, m.group(1), m.group(2))
        return
    if names_bpb(line):
        cur.loose = (lineno, line)
        return
    if cur.in_header:
        _header_kv(cur, line)


def _header_kv(cur: _Run, line: str) -> None:
    """Config echo lines made only of key:value / key=value tokens."""
    toks = line.split()
    if not toks or line.startswith(("step", "warmup")):
        return
    pairs = []
    for tok in toks:
        m = _KV.match(tok)
        if not m:
            return
        pairs.append((m.group(1), m.group(2)))
    for k, v in pairs:
        if v:
            _config(cur, k, v)


def _harness(log: RunLog, key: str, value: str) -> None:
    if key == "valid":
        log.harness["valid"] = value == "true"
    elif key == "artifact_bytes":
        log.harness["artifact_bytes"] = int(float(value))
    else:
        log.harness["val_bpb"] = float(value)
        log.harness["decimals"] = decimals(value)


def _final(cur: _Run, pre: str, loss: str | None, bpb: str, post: str, lineno: int) -> None:
    metric = metric_from_line(pre, loss, bpb, post, lineno)
    if metric is None:
        return
    cur.in_header = False
    if is_known_label(metric.label):
        cur.finals.append(metric)
    else:
        metric.note = "unrecognised label"
        cur.other_lines.append(metric)
