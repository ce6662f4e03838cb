"""The challenge's token shard files: found by split, read memory-mapped, written atomically.

The format itself (header constants, validation, serialisation) is `golfpack.shards`, the
one place both golfeval and golfpack's calibration read it from; it is re-exported here.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from golfpack.shards import (  # noqa: F401 (re-exported: the format's names)
    HEADER_BYTES,
    HEADER_WORDS,
    MAGIC,
    VERSION,
    ShardError,
    read_header,
    read_shard,
    shard_bytes,
)

SIDECAR_MARK = "_bytes_"


def write_shard(path, tokens, force: bool = False) -> None:
    """Write a shard atomically (temp file + rename)."""
    from golfpack.fileio import atomic_write_bytes

    atomic_write_bytes(path, shard_bytes(tokens), force=force)


def find_shards(pattern, kind: str | None = None) -> list[str]:
    """Expand a directory or glob into sorted shard paths.

    A directory means all `fineweb_{kind}_*.bin` in it. Byte sidecars
    (`fineweb_val_bytes_*.bin`) are never returned: a `fineweb_val_*.bin` glob matches them
    too, which silently mixed byte counts into the tokens in some records. With kind="val"
    or "train", a path naming the other split is refused.
    """
    pattern = os.fspath(pattern)
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, f"fineweb_{kind or '*'}_*.bin")
    paths = sorted(p for p in glob.glob(pattern) if SIDECAR_MARK not in os.path.basename(p))
    if not paths:
        raise ShardError(f"no shards match {pattern}")
    if kind is not None:
        other = {"val": "train", "train": "val"}.get(kind)
        bad = [p for p in paths if other and f"_{other}_" in os.path.basename(p)]
        if bad:
            raise ShardError(f"{bad[0]} is a {other} shard but {kind} shards were asked for")
    return paths


def find_sidecars(directory) -> list[str]:
    """The byte sidecars (`fineweb_val_bytes_*.bin`) in a directory, sorted (may be empty)."""
    return sorted(glob.glob(os.path.join(os.fspath(directory), "fineweb_val_bytes_*.bin")))


def load_tokens(pattern, kind: str | None = None, vocab_size: int | None = None,
                max_tokens: int | None = None) -> np.ndarray:
    """Concatenate the shards a pattern names into one int64-safe uint16 array."""
    parts, total = [], 0
    for path in find_shards(pattern, kind):
        t = read_shard(path, vocab_size)
        if max_tokens is not None:
            t = t[: max(0, max_tokens - total)]
        parts.append(np.asarray(t))
        total += t.size
        if max_tokens is not None and total >= max_tokens:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
