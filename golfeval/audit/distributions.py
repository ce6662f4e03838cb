"""Whole predicted distributions of the flat and sliding evaluations, for the audit's
normalization and target-independence checks.

Built from the same window plan, attention mask and logits function that scoring uses
(golfeval.score.core), so the rows are the distributions the scored losses come from:
row t holds log p(. | the window's inputs) at the position that predicts token t + 1.
Float64 log-softmax; NaN rows where the plan scores nothing.
"""

from __future__ import annotations

import numpy as np


def window_distributions(model, tokens: np.ndarray, mode: str, seq_len: int, stride: int = 64,
                         doc_isolation: bool = False, device="cpu", bos_id: int = 1) -> np.ndarray:
    """float64 [n_tokens - 1, vocab] log-probabilities (NaN where not scored)."""
    import torch

    from golfeval.score.core import document_mask, make_plan, scored_logits

    tokens = np.asarray(tokens, dtype=np.int64)
    plan = make_plan(int(tokens.size), mode, seq_len, stride)
    out = None
    dev = torch.device(device)
    with torch.inference_mode():
        for w in range(len(plan)):
            start, length, off = (int(plan.starts[w]), int(plan.lengths[w]),
                                  int(plan.offsets[w]))
            if length - off <= 0:
                continue
            idx = torch.from_numpy(tokens[start:start + length][None].copy()).to(dev)
            cols = torch.arange(off, length, device=dev)
            rows = torch.zeros_like(cols)
            mask = document_mask(idx, bos_id) if doc_isolation else None
            logits = scored_logits(model, idx, rows, cols, mask).double()
            logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
            if out is None:
                out = np.full((tokens.size - 1, logp.shape[1]), np.nan)
            out[start + off:start + length] = logp
    if out is None:
        out = np.full((max(tokens.size - 1, 0), 1), np.nan)
    return out
