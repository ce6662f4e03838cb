"""Which targets each evaluation window scores.

A stream of N tokens has N-1 targets: target t (0-based) is token t+1, predicted from tokens
0..t. A window is (start, length, offset): its inputs are tokens [start, start+length), its
targets are targets [start, start+length), and it scores only targets
[start+offset, start+length). Every plan scores each target it covers exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPlan:
    starts: np.ndarray   # int64 [W] first input token of each window
    lengths: np.ndarray  # int64 [W] inputs (= targets) per window
    offsets: np.ndarray  # int64 [W] first scored position inside the window
    n_targets: int       # targets in the stream (N - 1)
    mode: str

    def __len__(self) -> int:
        return int(self.starts.size)

    @property
    def scored_tokens(self) -> int:
        return int((self.lengths - self.offsets).sum())

    def coverage(self) -> np.ndarray:
        """How many times each target is scored (int32 [n_targets]); tests use this."""
        cover = np.zeros(self.n_targets + 1, dtype=np.int32)
        np.add.at(cover, self.starts + self.offsets, 1)
        np.add.at(cover, self.starts + self.lengths, -1)
        return np.cumsum(cover)[:-1]

    def shard(self, rank: int, world: int) -> WindowPlan:
        """A contiguous slice of the windows for one rank (sizes differ by at most one)."""
        lo, hi = _split(len(self), rank, world)
        return WindowPlan(self.starts[lo:hi], self.lengths[lo:hi], self.offsets[lo:hi],
                          self.n_targets, self.mode)


def _split(n: int, rank: int, world: int) -> tuple[int, int]:
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def flat_plan(n_tokens: int, seq_len: int) -> WindowPlan:
    """The challenge baseline's rule: non-overlapping blocks of seq_len targets, each scored
    whole; the tail that does not fill a block is dropped."""
    if seq_len <= 0:
        raise ValueError("seq_len must be positive")
    n_targets = max(0, n_tokens - 1)
    n_blocks = n_targets // seq_len
    starts = np.arange(n_blocks, dtype=np.int64) * seq_len
    lengths = np.full(n_blocks, seq_len, dtype=np.int64)
    return WindowPlan(starts, lengths, np.zeros(n_blocks, dtype=np.int64), n_targets, "flat")


def sliding_plan(n_tokens: int, seq_len: int, stride: int = 64) -> WindowPlan:
    """Windows of seq_len inputs every `stride` targets.

    The first window scores all of its targets; every later window ends where its scored
    range ends and scores at most `stride` targets, each with at least seq_len - stride
    tokens of context. The last window is right-aligned to the end of the stream, so every
    window has the full length (when the stream is at least one window long) and every
    target from the first to the last is scored exactly once.
    """
    if seq_len <= 0 or stride <= 0:
        raise ValueError("seq_len and stride must be positive")
    if stride > seq_len:
        raise ValueError(f"stride {stride} exceeds seq_len {seq_len}")
    n_targets = max(0, n_tokens - 1)
    if n_targets == 0:
        z = np.zeros(0, dtype=np.int64)
        return WindowPlan(z, z, z, 0, "sliding")
    if n_targets <= seq_len:
        one = np.zeros(1, dtype=np.int64)
        return WindowPlan(one, np.array([n_targets], dtype=np.int64), one, n_targets, "sliding")
    ends = np.concatenate((
        [seq_len], np.arange(seq_len + stride, n_targets, stride, dtype=np.int64), [n_targets]))
    ends = np.unique(ends)  # n_targets may coincide with the last stride step
    covered = np.concatenate(([0], ends[:-1]))
    starts = ends - seq_len
    lengths = np.full(ends.size, seq_len, dtype=np.int64)
    return WindowPlan(starts.astype(np.int64), lengths, (covered - starts).astype(np.int64),
                      n_targets, "sliding")
