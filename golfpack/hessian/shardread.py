"""Train shards for calibration inside golfpack, and the one rule calibration needs most:
validation data (`fineweb_val_*`, byte sidecars included) is never read. The shard format
itself is `golfpack.shards` (shared with golfeval's reader).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from golfpack.errors import GolfError
from golfpack.shards import ShardError, read_shard


class CalibrationDataError(GolfError):
    """Calibration data that is missing, malformed, or from the validation split."""


def _is_validation(path: str) -> bool:
    return "fineweb_val_" in os.path.basename(path) or "_val_bytes_" in os.path.basename(path)


def train_shard_paths(source) -> list[str]:
    """Sorted train shards named by a directory or a glob; validation shards are refused.

    A directory means its `fineweb_train_*.bin`. A pattern or file that names or matches any
    validation shard or byte sidecar is an error, not silently filtered: calibrating on
    validation tokens would leak the scored data into the artifact.
    """
    source = os.fspath(source)
    if _is_validation(source) or "fineweb_val" in os.path.basename(source):
        raise CalibrationDataError(f"{source} names validation shards; calibrate on train shards")
    pattern = os.path.join(source, "fineweb_train_*.bin") if os.path.isdir(source) else source
    paths = sorted(glob.glob(pattern))
    bad = [p for p in paths if _is_validation(p)]
    if bad:
        raise CalibrationDataError(
            f"{source} matches validation data ({os.path.basename(bad[0])}); "
            "calibrate on train shards only")
    if not paths:
        raise CalibrationDataError(f"no train shards match {pattern}")
    return paths


def read_tokens(path, vocab_size: int | None = None) -> np.ndarray:
    """Validate a shard and memory-map its tokens (uint16, read-only)."""
    try:
        return read_shard(path, vocab_size)
    except ShardError as exc:
        raise CalibrationDataError(str(exc)) from None


def load_train_tokens(source, n_tokens: int, vocab_size: int | None = None) -> np.ndarray:
    """The first `n_tokens` tokens of the train shards `source` names (int64 array)."""
    parts, total = [], 0
    for path in train_shard_paths(source):
        t = read_tokens(path, vocab_size)[: n_tokens - total]
        parts.append(np.asarray(t, dtype=np.int64))
        total += t.size
        if total >= n_tokens:
            break
    if total < n_tokens:
        raise CalibrationDataError(
            f"{source}: calibration needs {n_tokens} tokens, the train shards hold {total}")
    return np.concatenate(parts)
