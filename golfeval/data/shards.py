"""The challenge's token shard format, read memory-mapped and written atomically.

Layout: 256 little-endian int32 header words (magic 20240520, version 1, token count n,
the rest zero), then n little-endian uint16 tokens; file size exactly 1024 + 2*n.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from golfpack.errors import GolfError

MAGIC = 20240520
VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
SIDECAR_MARK = "_bytes_"


class ShardError(GolfError):
    """A shard file is malformed, missing, or holds tokens outside the vocabulary."""


def read_header(path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"{path}: cannot read shard ({exc.strerror})") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({len(raw)} of {HEADER_BYTES} bytes)")
    header = np.frombuffer(raw, dtype="<i4")
    if int(header[0]) != MAGIC:
        raise ShardError(f"{path}: wrong magic {int(header[0])} (expected {MAGIC})")
    if int(header[1]) != VERSION:
        raise ShardError(f"{path}: unsupported version {int(header[1])} (expected {VERSION})")
    n = int(header[2])
    if n < 0:
        raise ShardError(f"{path}: negative token count {n}")
    expected = HEADER_BYTES + 2 * n
    if size < expected:
        raise ShardError(f"{path}: truncated: header says {n} tokens ({expected} bytes), "
                         f"file has {size} bytes")
    if size != expected:
        raise ShardError(f"{path}: size mismatch: header says {n} tokens ({expected} bytes), "
                         f"file has {size} bytes")
    return n


def read_shard(path, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a shard's tokens (uint16, read-only). With `vocab_size`, refuse ids >= it."""
    n = read_header(path)
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
    if vocab_size is not None:
        hi = int(tokens.max())
        if hi >= vocab_size:
            pos = int(np.argmax(tokens >= vocab_size))
            raise ShardError(f"{os.fspath(path)}: token id {hi} at position {pos} is >= "
                             f"vocab size {vocab_size}")
    return tokens


def shard_bytes(tokens) -> bytes:
    """Serialise tokens (any int array with values in [0, 65535]) to shard bytes."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError("shard tokens must be one-dimensional")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF):
        raise ShardError("shard tokens must lie in [0, 65535] to fit uint16")
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, arr.size
    return header.tobytes() + arr.astype("<u2").tobytes()


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
