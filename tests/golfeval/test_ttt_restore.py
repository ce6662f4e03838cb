"""The TTT evaluations' teardown: weights and requires_grad flags come back and the progress
bar closes, also when the loop raises."""

from __future__ import annotations

import pytest
import torch
from tinymodels import live_gpt

from golfeval.ttt.restore import ModelRestore, device_seconds


class _Bar:
    closed = False

    def close(self):
        self.closed = True


@pytest.mark.parametrize("weights", [True, False])
def test_restore_after_an_error(weights):
    m, _ = live_gpt()
    m.requires_grad_(False)
    next(m.parameters()).requires_grad_(True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    flags = [p.requires_grad for p in m.parameters()]
    bar = _Bar()
    with pytest.raises(RuntimeError, match="boom"), ModelRestore(m, weights=weights, bar=bar):
        m.requires_grad_(True)
        with torch.no_grad():
            next(m.parameters()).add_(1.0)
        raise RuntimeError("boom")
    assert [p.requires_grad for p in m.parameters()] == flags and bar.closed
    same = all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert same is weights   # weights=False: the caller promised not to train in place


def test_device_seconds_counts_from_t0():
    import time

    t0 = time.perf_counter() - 5.0  # a clock started five seconds ago
    assert 5.0 <= device_seconds(torch.device("cpu"), t0) < 65
