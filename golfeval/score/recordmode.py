"""`--mode sliding-record`: the records' common sliding evaluation, flaws included, beside
golf's exact sliding score, so a reviewer sees why a log's number differs from the exact one.

The records' rule (from 2026-03 on), on a stream of N tokens and window length L, stride S:
  1. the stream is first trimmed to whole blocks: T = ((N - 1) // L) * L targets are kept,
     the tail after the last full block is never scored;
  2. windows start every S targets (ws = 0, S, 2S, ...) as long as they hold at least S
     targets (or ws = 0); a window covers targets [ws, min(ws + L, T));
  3. the first window scores all its targets, every other window its last S targets
     (max(len - S, 0) onwards).
Near the end, windows shorter than L keep being started, and each scores the last S
targets of the stream again: at S = 64, L = 1024 the final 64 targets count 16 times
(15 x 64 = 960 extra positions), with shorter contexts each time.

golf's exact sliding plan (golfeval.score.windows.sliding_plan) scores every target of the
untrimmed stream exactly once. Both are reported, with their difference, the positions
counted more than once, the targets trimmed, and the record number predicted from golf's
exact per-token losses by weighting each target by how often the records count it (it
differs from the record's only by the shorter contexts of the trailing windows).
"""

from __future__ import annotations

import math

import numpy as np

from golfeval.score.windows import WindowPlan

LN2 = math.log(2.0)
MODE = "sliding-record"


def record_sliding_plan(n_tokens: int, seq_len: int, stride: int) -> WindowPlan:
    """The records' windows over the first T + 1 tokens (T = whole blocks of seq_len)."""
    if seq_len <= 0 or stride <= 0 or stride > seq_len:
        raise ValueError("need 0 < stride <= seq_len")
    total = max(0, n_tokens - 1) // seq_len * seq_len
    if total == 0:
        raise ValueError(f"the stream has fewer than {seq_len + 1} tokens: the records' "
                         "evaluation trims it to nothing")
    starts, lengths, offsets = [], [], []
    for ws in range(0, total, stride):
        wlen = min(ws + seq_len, total) - ws
        if wlen < stride and ws != 0:
            continue
        starts.append(ws)
        lengths.append(wlen)
        offsets.append(0 if ws == 0 else max(wlen - stride, 0))
    a = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return WindowPlan(a(starts), a(lengths), a(offsets), total, MODE)


def score_record_sliding(model, tokens, target_bytes, seq_len: int = 1024, stride: int = 64,
                         **score_kw) -> tuple[object, object, dict]:
    """-> (record-rule ScoreResult, exact sliding ScoreResult, comparison dict)."""
    from golfeval.score.core import score_tokens, score_windows
    from golfpack.errors import GolfError

    tokens = np.asarray(tokens)
    target_bytes = np.asarray(target_bytes)
    try:
        plan = record_sliding_plan(int(tokens.size), seq_len, stride)
    except ValueError as exc:
        raise GolfError(str(exc)) from None
    t = plan.n_targets
    score_kw.pop("per_token", None)
    rec = score_windows(model, tokens[:t + 1], plan, target_bytes[:t], **score_kw)
    exact = score_tokens(model, tokens, target_bytes, mode="sliding", seq_len=seq_len,
                         stride=stride, per_token=True, **score_kw)
    cover = plan.coverage().astype(np.float64)
    nats = exact.per_token_nats[:t] if exact.per_token_nats is not None else None
    predicted = None
    if nats is not None and not np.isnan(nats).any():
        pn = math.fsum((nats * cover).tolist())
        pb = float((target_bytes[:t].astype(np.float64) * cover).sum())
        predicted = pn / LN2 / pb if pb else float("nan")
    extra = int((cover - 1).clip(min=0).sum())
    comparison = {
        "record_bpb": rec.val_bpb, "exact_bpb": exact.val_bpb,
        "difference_bpb": rec.val_bpb - exact.val_bpb,
        "record_loss": rec.val_loss, "exact_loss": exact.val_loss,
        "double_counted_positions": extra,
        "max_times_counted": int(cover.max()) if cover.size else 0,
        "trimmed_targets": int(max(0, tokens.size - 1) - t),
        "record_scored_tokens": rec.scored_tokens, "exact_scored_tokens": exact.scored_tokens,
        "record_bytes": rec.bytes_sum, "exact_bytes": exact.bytes_sum,
        "predicted_record_bpb": predicted,
    }
    return rec, exact, comparison
