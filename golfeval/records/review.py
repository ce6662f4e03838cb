"""A reviewer's report on one record folder: verify + significance + the checks maintainers
did by hand on record PRs.

- code bytes recounted from the folder (golfeval.records.codecount) against each log's
  `Code size` lines and the code part of its total, and total = model bytes (log) +
  recounted code against 16,000,000;
- time: training <= 600 s (verify), evaluation <= 600 s per run (the run's own eval times
  summed, see golfeval.records.timing), and quantization/calibration work done after the
  training clock stopped, with its duration;
- data: tokenizer, val tokens against the full split, implied val bytes, byte sidecars for
  tokenizers that transform the text;
- a per-run table and a one-line verdict.

A logged code size that differs from the recount is explained, not flagged, when the log
itself is consistent (its total minus its model bytes is its code size), the difference is
edit-sized and the recomputed total still fits: the log measured the script it ran, and
the script was edited afterwards (the baseline logs 47,642 bytes; the shared script is
47,686). Differences in the compressed size within a few percent are the minifier's
version. Anything else is a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from golfeval.records.codecount import CodeCount, count_code
from golfeval.records.folders import RecordFolder, read_folder
from golfeval.records.timing import EVAL_LIMIT_S, eval_spend, post_clock_work
from golfeval.records.verify import (
    BUDGET_BYTES,
    VAL_BYTES,
    Verification,
    implied_val_bytes,
    verify_record,
)
from golfpack.errors import Note

EDIT_TOLERANCE = 0.01  # a raw code size within 1% (or 512 B) of the recount: an edit
EDIT_SLACK_BYTES = 512
MINIFIER_TOLERANCE = 0.03  # compressed sizes within 3%: another python-minifier version
# Full validation split, tokens as the logs print them (facts from the records' logs).
FULL_VAL_TOKENS = {"fineweb_1024_bpe.model": 62_021_632, "fineweb_8192_bpe.model": 40_540_160,
                   "byte260": 151_130_112,
                   "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model": 47_851_520}
_SIDECAR_WORDS = ("caseops", "lossless", "caps")


def _flag(code: str, severity: str, message: str) -> dict:
    return {"code": code, "severity": severity, "message": message}


@dataclass
class Review:
    verification: Verification
    code: CodeCount
    rows: list = field(default_factory=list)
    flags: list = field(default_factory=list)
    significance: dict | None = None
    significance_error: str | None = None

    @property
    def errors(self) -> list:
        return [f for f in self.verification.flags + self.flags if f["severity"] == "error"]

    @property
    def ok(self) -> bool:
        sig = self.significance
        return self.verification.ok and not self.errors and (
            sig is None or bool(sig.get("significant"))) and self.significance_error is None

    @property
    def verdict(self) -> Note:
        v = self.verification
        warn = sum(f["severity"] == "warning" for f in v.flags + self.flags)
        parts = [f"{v.name}: {'PASS' if self.ok else 'FAIL'}",
                 f"claim {v.claim} {v.classification}" + (
                     f" (n={v.n}, mean {v.mean:.5f})" if v.mean is not None else "")]
        if self.significance is not None:
            s = self.significance
            word = "significant" if s["significant"] else "NOT significant"
            parts.append(f"{s['rule']} rule {word} (p={s['verdicts'][s['rule']]['p']:.3g})")
        elif self.significance_error:
            parts.append(f"significance: {self.significance_error}")
        totals = [r["total_recounted"] or r["total_logged"] for r in self.rows]
        totals = [t for t in totals if t is not None]
        if totals:
            parts.append(f"max total {max(totals):,} B")
        evals = [r["eval_s"] for r in self.rows if r["eval_s"] is not None]
        if evals:
            parts.append(f"max eval {max(evals):.0f} s")
        parts.append(f"{len(self.errors)} error(s), {warn} warning(s)")
        first = self.errors[0]["message"] if self.errors else None
        line = "; ".join(parts + ([f"first: {first}"] if first is not None else []))
        # the first error may name parameters (a Note): the line keeps them (and the advice
        # for a command without them) for the CLI
        other = getattr(first, "fallback", None)
        return Note(line, param=getattr(first, "params", ()),
                    fallback=None if other is None else "; ".join(parts + [f"first: {other}"]))

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "ok": self.ok, "verify": self.verification.to_dict(),
                "code": self.code.to_dict(), "runs": self.rows, "flags": self.flags,
                "significance": self.significance, "significance_error":
                self.significance_error}


def _logged_code_forms(log) -> dict:
    """The code sizes one run printed: plain (raw script), compressed, and the code part of
    its total (total - model bytes of the same tag)."""
    forms = {"plain": log.code_plain, "compressed": log.code_compressed}
    if log.total_bytes is not None and log.model_bytes is not None:
        forms["total_part"] = log.total_bytes - log.model_bytes
    else:
        forms["total_part"] = None
    return forms


def _code_checks(run, code: CodeCount, flags: list) -> tuple[int | None, str]:
    """Compare one run's logged code sizes with the recount; return the recounted code
    bytes in the form the run's total uses, and a short note."""
    log = run.log
    forms = _logged_code_forms(log)
    part = forms["total_part"]
    if not code.files:
        return None, "not recounted"
    shipped_raw = code.raw_bytes
    if code.wrapper is not None:  # a self-extracting script ships compressed already
        compressed_recount = shipped_raw
    else:
        compressed_recount = code.recipe_bytes or code.minified_bytes
    uses = None
    if part is not None:
        if forms["compressed"] is not None and part == forms["compressed"]:
            uses = "compressed"
        elif forms["plain"] is not None and part == forms["plain"]:
            uses = "plain"
        else:
            flags.append(_flag("code_total_part", "warning", f"{run.name}: the total's code "
                               f"part {part:,} (total - model) is none of the logged code "
                               "sizes"))
    if uses is None:
        uses = "compressed" if forms["compressed"] is not None and forms["plain"] is None \
            and code.wrapper is None else "plain"
    notes = []
    plain = forms["plain"]
    if plain is not None:
        script = code.script_bytes if code.wrapper is None else shipped_raw
        cr = code.files[0].newline_bytes
        if plain == shipped_raw:
            notes.append("plain = recount")
        elif code.wrapper is not None and plain == code.wrapper["payload_bytes"]:
            notes.append(f"plain {plain:,} = the unpacked payload; the shipped wrapper is "
                         f"{shipped_raw:,} B")
        elif plain == script and len(code.files) > 1:
            extra = shipped_raw - script
            flags.append(_flag("code_modules_uncounted", "warning", f"{run.name}: the log "
                               f"counts only {code.script} ({plain:,} B); the folder-local "
                               f"modules it imports add {extra:,} B"))
        elif cr and plain == script - cr:
            notes.append(f"plain = recount less {cr} CR bytes (read in text mode)")
        elif abs(plain - shipped_raw) <= max(EDIT_TOLERANCE * shipped_raw,
                                             EDIT_SLACK_BYTES) and (
                part is None or uses != "plain" or part == plain):
            notes.append(f"plain {plain:,} vs recount {shipped_raw:,} ({shipped_raw - plain:+,} "
                         "B): the script was edited after the run")
        elif code.wrapper is None and compressed_recount and \
                abs(plain / compressed_recount - 1.0) <= MINIFIER_TOLERANCE:
            notes.append(f"plain {plain:,} vs packed recount {compressed_recount:,} "
                         f"({compressed_recount / plain - 1.0:+.2%}): the run shipped this "
                         "code packed (self-extracting)")
            uses = "compressed"
        else:
            flags.append(_flag("code_mismatch", "warning", f"{run.name}: logged code "
                               f"{plain:,} B, the folder's code is {shipped_raw:,} B "
                               f"({shipped_raw - plain:+,} B): not the script that ran"))
    comp = forms["compressed"]
    if comp is not None and compressed_recount:
        rel = compressed_recount / comp - 1.0
        if comp == compressed_recount:
            notes.append("compressed = recount")
        elif abs(rel) <= MINIFIER_TOLERANCE:
            notes.append(f"compressed {comp:,} vs recount {compressed_recount:,} ({rel:+.2%}): "
                         "minifier version")
        elif comp > compressed_recount:  # counted on the safe side: another recipe
            flags.append(_flag("code_compressed_mismatch", "info", f"{run.name}: logged "
                               f"compressed code {comp:,} B, recount {compressed_recount:,} B "
                               f"({rel:+.1%}): the log counts more than the recount"))
        else:
            flags.append(_flag("code_compressed_mismatch", "warning", f"{run.name}: logged "
                               f"compressed code {comp:,} B, recount {compressed_recount:,} B "
                               f"({rel:+.1%}): the log counts less than the code needs"))
    recount = compressed_recount if uses == "compressed" else shipped_raw
    return recount, "; ".join(notes) or "-"


def _data_flags(done_runs, flags: list) -> None:
    for r in done_runs:
        log = r.log
        tok = log.tokenizer_id
        if tok is None:
            flags.append(_flag("tokenizer_unknown", "info", f"{r.name}: the log names no "
                               "tokenizer"))
        full = FULL_VAL_TOKENS.get(tok) if tok else None
        if full and log.val_tokens and log.val_tokens != full:
            flags.append(_flag("val_tokens", "warning", f"{r.name}: {log.val_tokens:,} val "
                               f"tokens, the full split has {full:,} with {tok}"))
        if tok and any(w in tok.lower() for w in _SIDECAR_WORDS) and not log.byte_sidecar:
            flags.append(_flag("byte_sidecar", "warning", f"{r.name}: {tok} transforms the "
                               "text, but the log does not say that byte sidecars gave the "
                               "original bytes"))


def review_record(folder, sota=None, sota_bpb: float | None = None, code_files=None,
                  rule: str = "readme", compressed: bool = True,
                  rec: RecordFolder | None = None, claim: float | None = None) -> Review:
    """Everything `golfeval review` reports for one record folder (`claim`: the val_bpb to
    check instead of submission.json's)."""
    rec = rec if rec is not None else read_folder(folder)
    v = verify_record(rec, claim=claim)
    code = count_code(folder=rec.path, files=code_files, compressed=compressed)
    out = Review(v, code)
    record_track = rec.track != "non-record"
    counted = {id(r) for r in v.counted}
    for r in rec.primary_runs():
        log = r.log
        recount, code_note = _code_checks(r, code, out.flags)
        total_re = log.model_bytes + recount if (recount is not None and
                                                 log.model_bytes is not None) else None
        if total_re is not None and total_re > BUDGET_BYTES:
            out.flags.append(_flag("over_budget_recount", "error" if id(r) in counted
                                   else "warning", f"{r.name}: model {log.model_bytes:,} + "
                                   f"recounted code {recount:,} = {total_re:,} B > "
                                   f"{BUDGET_BYTES:,}"))
        spend = eval_spend(log)
        if spend["seconds"] is not None and spend["seconds"] > EVAL_LIMIT_S:
            sev = ("error" if id(r) in counted else "warning") if record_track else "info"
            out.flags.append(_flag("eval_time", sev, f"{r.name}: evaluation "
                                   f"{spend['seconds']:.1f} s > {EVAL_LIMIT_S:.0f} s ("
                                   + ", ".join(f"{p['what']} {p['seconds']:.1f} s"
                                               for p in spend["parts"] if p["counted"])
                                   + ")"))
        work = post_clock_work(log)
        for w in work:
            if w["reserved_s"] is not None and w["seconds"] <= w["reserved_s"]:
                sev, why = "info", (f"within the {w['reserved_s']:g} s reserved from the "
                                    "training clock")
            else:
                sev = ("error" if id(r) in counted else "warning") if record_track else "info"
                why = ("after the training clock stopped, outside the 600 s" if
                       w["reserved_s"] is None else
                       f"longer than the {w['reserved_s']:g} s reserved")
            out.flags.append(_flag("post_clock_work", sev, f"{r.name}: {w['what']} took "
                                   f"{w['seconds']:.1f} s (line {w['line']}) {why}"))
        vb = implied_val_bytes(r)
        out.rows.append({
            "run": r.name, "seed": r.seed, "val_bpb": log.val_bpb, "kind": log.kind,
            "counted": id(r) in counted, "status": log.status,
            "train_s": log.train_time_ms / 1000 if log.train_time_ms is not None else None,
            "eval_s": spend["seconds"], "eval_parts": spend["parts"],
            "logged_total_eval_s": log.total_eval_s,
            "post_clock_s": sum(w["seconds"] for w in work) if work else None,
            "model_bytes": log.model_bytes, "code_logged": _logged_code_forms(log),
            "code_recounted": recount, "code_note": code_note,
            "total_logged": log.total_bytes, "total_recounted": total_re,
            "tokenizer": log.tokenizer_id, "val_tokens": log.val_tokens,
            "val_bytes": round(vb) if vb is not None else None,
            "val_bytes_rel": (vb / VAL_BYTES - 1.0) if vb is not None else None,
            "byte_sidecar": log.byte_sidecar, "reason": log.reason})
    _data_flags([r for r in rec.primary_runs() if r.resolved], out.flags)
    if not code.files:
        out.flags.append(_flag("code_not_recounted", "info", "; ".join(code.problems)))
    else:
        for p in code.problems:
            out.flags.append(_flag("code", "warning", p))
    if sota or sota_bpb is not None:
        _significance(out, rec, sota, sota_bpb, rule)
    return out


def _significance(out: Review, rec: RecordFolder, sota, sota_bpb, rule: str) -> None:
    from golfeval.records.significance import compare, load_sample
    from golfpack.errors import GolfError

    try:
        new = load_sample([rec.path], "NEW")
        old = load_sample(list(sota), "OLD") if sota else None
        res = compare(new, old, sota_bpb)
    except GolfError as exc:
        out.significance_error = str(exc)
        return
    res["rule"] = rule
    res["significant"] = res["verdicts"][rule]["significant"]
    if res["significant"] is None:
        out.significance_error = f"the {rule} verdict needs a test that could not run"
    out.significance = res
