"""Audit checks for the leak classes found in real record reviews, beyond prefix invariance.

- normalization: the probabilities a mode scores against sum to 1 over the vocabulary.
  Black-box, so it holds for any mode: at a few scored positions s, the token s+1 is set to
  every candidate v in turn and the loss the mode gives target s is read; sum_v exp(-loss)
  (float64, math.fsum) must be 1 within `NORM_TOL`. With a `distributions` hook (the
  built-in flat and sliding modes have one) every scored position's whole distribution is
  summed as well. A causal mode whose candidate sweep sums to 1 defines a proper code.
- target independence: a state at s that reads token s+1 (its own target) is invisible to
  the prefix audit (a cut keeps 0..t and compares targets < t). At positions whose next
  token is replaced, the whole predicted distribution at s (and before) must not change.
  Needs the mode's `distributions`; without one the candidate-sweep normalization above is
  the black-box test (a target-reading mode sums to more or less than 1).
- document isolation: with isolation claimed, the losses of a document do not change when
  the previous document's tokens change (the SmearGate BOS leak carried the last token of
  one document into the next).
"""

from __future__ import annotations

import math

import numpy as np

NORM_TOL = 1e-6  # |sum_v p(v) - 1|, in float64 after log-softmax in float64 (CPU)


def _check(name: str, ok: bool, detail: str, position: int | None = None,
           skipped: bool = False):
    from golfeval.audit.causality import Check

    return Check(name, ok, detail, position, skipped)


def _scored_positions(nats: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    idx = np.flatnonzero(~np.isnan(nats))
    if idx.size == 0:
        return []
    picks = {int(idx[0]), int(idx[-1])}
    while len(picks) < min(k, idx.size):
        picks.add(int(rng.choice(idx)))
    return sorted(picks)[:max(k, 1)]


def check_normalization(mode, tokens: np.ndarray, target_bytes_fn, vocab_size: int,
                        positions: int = 1, tol: float = NORM_TOL, seed: int = 0,
                        sweep_tokens: int | None = None, dist_tokens: int | None = None):
    """Candidate sweeps at `positions` scored positions of the first `sweep_tokens` tokens
    (each sweep costs vocab_size evaluations), plus every row of `mode.distributions` over
    the first `dist_tokens` tokens when the mode has that hook."""
    rng = np.random.default_rng(seed)
    toks = np.asarray(tokens, dtype=np.int64)
    worst, first_bad, detail_bad = 0.0, None, ""
    dist = getattr(mode, "distributions", None)
    if dist is None and positions <= 0:
        return _check("normalization", True, "not tested: no candidate sweep asked for and "
                      "the mode has no whole distributions", skipped=True)
    rows_checked = 0
    if dist is not None:
        part = toks[:dist_tokens] if dist_tokens else toks
        logp = np.asarray(dist(part), dtype=np.float64)
        scored = ~np.isnan(logp).any(axis=1)
        sums = np.array([math.fsum(np.exp(r).tolist()) for r in logp[scored]])
        rows_checked = int(scored.sum())
        if sums.size:
            err = np.abs(sums - 1.0)
            worst = float(err.max())
            if worst > tol:
                k = int(np.argmax(err > tol))
                at = int(np.flatnonzero(scored)[k])
                first_bad = at + 1
                detail_bad = f"the distribution at target {at} sums to {sums[k]:.9f}"
    swept = 0
    part = toks[:sweep_tokens] if sweep_tokens else toks
    if positions > 0:
        base = mode.evaluate(part, np.asarray(target_bytes_fn(part), dtype=np.int64))
        picks = _scored_positions(base.per_token_nats, positions, rng) \
            if base.per_token_nats is not None else []
        for s in picks:
            losses = np.empty(vocab_size)
            for v in range(vocab_size):
                copy = part.copy()
                copy[s + 1] = v
                res = mode.evaluate(copy, np.asarray(target_bytes_fn(copy), dtype=np.int64))
                losses[v] = res.per_token_nats[s]
            total = math.fsum(np.exp(-losses).tolist())
            swept += 1
            err = abs(total - 1.0) if math.isfinite(total) else math.inf
            worst = max(worst, err)
            if err > tol and (first_bad is None or s + 1 < first_bad):
                first_bad = s + 1
                detail_bad = (f"candidate sweep at target {s}: the sum over {vocab_size} "
                              f"tokens of exp(-loss) is {total:.9f}")
    what = (f"{rows_checked:,} whole distributions, " if dist is not None else "") + \
        f"{swept} candidate sweep(s) of {vocab_size} tokens"
    if first_bad is None:
        return _check("normalization", True, f"{what}: max |sum - 1| = {worst:.2e} "
                      f"<= {tol:g} (float64)")
    return _check("normalization", False, f"{what}: {detail_bad}; |sum - 1| > {tol:g} "
                  f"(first at position {first_bad:,})", first_bad)


def check_target_independence(mode, tokens: np.ndarray, vocab_size: int, positions: int = 8,
                              seed: int = 0, atol: float = 0.0, max_tokens: int | None = None):
    """Replace token s+1 at `positions` places; the distributions at targets <= s (which
    predict tokens up to s+1 from tokens up to s) must not move."""
    dist = getattr(mode, "distributions", None)
    if dist is None:
        return _check("target independence", True, "not testable: the mode reports only "
                      "the target's loss (its candidate-sweep normalization is the black-box "
                      "test)", skipped=True)
    rng = np.random.default_rng(seed + 1)
    toks = np.asarray(tokens, dtype=np.int64)
    if max_tokens:
        toks = toks[:max_tokens]
    base = np.asarray(dist(toks), dtype=np.float64)
    scored = np.flatnonzero(~np.isnan(base).any(axis=1))
    if scored.size == 0:
        return _check("target independence", False, "no scored position")
    picks = sorted({int(x) for x in rng.choice(scored, min(positions, scored.size),
                                               replace=False)})
    first, worst = None, 0.0
    for s in picks:
        copy = toks.copy()
        copy[s + 1] = (toks[s + 1] + 1 + rng.integers(0, vocab_size - 1)) % vocab_size
        other = np.asarray(dist(copy), dtype=np.float64)
        a, b = base[:s + 1], other[:s + 1]
        both = ~(np.isnan(a) & np.isnan(b))
        diff = np.where(both, np.abs(a - b), 0.0)
        diff = np.where(np.isnan(diff), np.inf, diff)
        bad_rows = np.flatnonzero(diff.max(axis=1) > atol) if diff.size else []
        worst = max(worst, float(np.nanmax(diff)) if diff.size else 0.0)
        if len(bad_rows):
            pos = int(bad_rows[0]) + 1
            first = pos if first is None else min(first, pos)
    if first is None:
        return _check("target independence", True, f"{len(picks)} replaced next tokens: "
                      f"whole distributions unchanged (max diff {worst:.1e})")
    return _check("target independence", False, f"replacing a next token changed the "
                  f"distribution that predicts it (first at position {first:,}: the state "
                  f"there reads its own target)", first)


def check_doc_isolation(mode, tokens: np.ndarray, target_bytes_fn, vocab_size: int,
                        bos_id: int = 1, seed: int = 0, atol: float = 0.0, docs: int = 2):
    """Randomise the previous document (BOS kept, no new BOS) and compare the losses of the
    next document's tokens after its BOS."""
    toks = np.asarray(tokens, dtype=np.int64)
    starts = [int(b) for b in np.flatnonzero(toks == bos_id) if b >= 2]
    if not starts:
        return _check("document isolation", True, "not tested: no document boundary after "
                      "the stream's second token (audit more tokens)", skipped=True)
    rng = np.random.default_rng(seed + 2)
    base = mode.evaluate(toks, np.asarray(target_bytes_fn(toks), dtype=np.int64))
    all_starts = np.flatnonzero(toks == bos_id)
    first, tested = None, 0
    for b in starts[:docs]:
        prev = int(all_starts[all_starts < b].max()) if (all_starts < b).any() else -1
        lo = prev + 1
        nxt = all_starts[all_starts > b]
        end = int(nxt[0]) if nxt.size else toks.size
        if b - lo < 1 or end - b < 2:
            continue
        copy = toks.copy()
        fill = rng.integers(0, vocab_size - 1, b - lo)
        copy[lo:b] = np.where(fill >= bos_id, fill + 1, fill)  # never a BOS
        other = mode.evaluate(copy, np.asarray(target_bytes_fn(copy), dtype=np.int64))
        a, o = base.per_token_nats[b:end - 1], other.per_token_nats[b:end - 1]
        same = (np.isnan(a) & np.isnan(o)) | (np.abs(a - o) <= atol)
        tested += 1
        if not same.all():
            pos = b + int(np.argmin(same)) + 1
            first = pos if first is None else min(first, pos)
    if not tested:
        return _check("document isolation", True, "not tested: no document with a previous "
                      "document and two tokens", skipped=True)
    if first is None:
        return _check("document isolation", True, f"{tested} document(s): losses unchanged "
                      "when the previous document changes")
    return _check("document isolation", False, "a document's losses changed with the previous "
                  f"document (first at position {first:,})", first)


def leak_checks(mode, tokens: np.ndarray, target_bytes_fn, vocab_size: int, *,
                seq_len: int, sweeps: int | None = None, positions: int = 8, seed: int = 0,
                atol: float = 0.0, bos_id: int = 1, doc_isolation: bool | None = None,
                tol: float = NORM_TOL) -> list:
    """The three checks on one mode. The candidate sweeps run on the first seq_len + 1
    tokens (one window: vocab_size evaluations each); whole distributions on the first
    2 * seq_len + 1; document isolation on the whole stream when the mode (or the caller)
    claims it, otherwise it is reported as not claimed. `sweeps=None`: none when the mode
    has whole distributions (they cover every position), one otherwise."""
    if sweeps is None:
        sweeps = 0 if getattr(mode, "distributions", None) is not None else 1
    short = min(int(np.asarray(tokens).size), seq_len + 1)
    longer = min(int(np.asarray(tokens).size), 2 * seq_len + 1)
    out = [check_normalization(mode, tokens, target_bytes_fn, vocab_size, positions=sweeps,
                               tol=tol, seed=seed, sweep_tokens=short, dist_tokens=longer)]
    out.append(check_target_independence(mode, tokens, vocab_size, positions=positions,
                                         seed=seed, atol=atol, max_tokens=longer))
    claimed = mode.doc_isolated if doc_isolation is None else doc_isolation
    if claimed:
        out.append(check_doc_isolation(mode, tokens, target_bytes_fn, vocab_size, bos_id=bos_id,
                                       seed=seed, atol=atol))
    else:
        out.append(_check("document isolation", True, "not claimed by the mode or the caller",
                          skipped=True))
    return out
