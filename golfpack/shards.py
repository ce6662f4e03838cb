"""The challenge's token shard format: its constants, header validation and serialisation.

Layout: 256 little-endian int32 header words (magic 20240520, version 1, token count n,
the rest zero), then n little-endian uint16 tokens; file size exactly 1024 + 2*n.

It lives in golfpack (numpy only, no torch) because both sides read shards: golfeval scores
them, and golfpack calibrates on train shards but may not import golfeval. Tokens are
memory-mapped, never copied whole into memory.
"""

from __future__ import annotations

import os

import numpy as np

from golfpack.errors import GolfError

MAGIC = 20240520
VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4


class ShardError(GolfError):
    """A shard file is malformed, missing, or holds tokens outside the vocabulary."""


def read_header(path) -> int:
    """Validate a shard's header and size; return its token count.

    The magic and version are checked on whatever header words the file holds, so a file
    that is not a shard at all is named as such even when it is shorter than a header."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"{path}: cannot read shard ({exc.strerror})") from None
    header = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4")
    if header.size >= 1 and int(header[0]) != MAGIC:
        raise ShardError(f"{path}: wrong magic {int(header[0])} (expected {MAGIC})")
    if header.size >= 2 and int(header[1]) != VERSION:
        raise ShardError(f"{path}: unsupported version {int(header[1])} (expected {VERSION})")
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({len(raw)} of {HEADER_BYTES} bytes)")
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
