"""Byte layouts that make streams compress well: dense N-bit packing of integer codes and
byte shuffling (byte planes) of multi-byte floats.

Bit packing: a code q in [-(2^(N-1)-1), 2^(N-1)-1] is stored as the unsigned N-bit value
u = q + 2^(N-1); eight codes make N bytes, code k of a group occupying bits N*k .. N*k+N-1
of the group's little-endian integer. The last group is zero-padded, so a packed stream of
n codes is ceil(n/8)*N bytes.
"""

from __future__ import annotations

import numpy as np

from golfpack.errors import ArtifactError


def packed_size(n: int, bits: int) -> int:
    return -(-n // 8) * bits


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """int8 codes (any shape) -> dense N-bit bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    flat = np.ascontiguousarray(codes, dtype=np.int8).ravel()
    n = flat.size
    groups = -(-n // 8)
    u = np.zeros(groups * 8, dtype=np.uint64)
    u[:n] = (flat.astype(np.int16) + (1 << (bits - 1))).astype(np.uint64)
    if n and (u[:n].max() >> np.uint64(bits)):
        raise ValueError(f"codes do not fit in {bits} bits")
    u = u.reshape(groups, 8)
    shifts = (np.arange(8, dtype=np.uint64) * np.uint64(bits))[None, :]
    word = np.bitwise_or.reduce(u << shifts, axis=1)  # one uint64 per group, < 2^(8*bits)
    as_bytes = word.astype("<u8").view(np.uint8).reshape(groups, 8)[:, :bits]
    return as_bytes.tobytes()


def unpack_bits(data: bytes, bits: int, n: int) -> np.ndarray:
    """Inverse of pack_bits -> int8 [n]. Raises ArtifactError on a size mismatch."""
    if not 1 <= bits <= 8:
        raise ArtifactError(f"bit width {bits} is outside 1..8")
    if len(data) != packed_size(n, bits):
        raise ArtifactError(f"packed stream holds {len(data)} bytes, "
                            f"expected {packed_size(n, bits)} for {n} {bits}-bit codes")
    groups = -(-n // 8)
    raw = np.zeros((groups, 8), dtype=np.uint8)
    raw[:, :bits] = np.frombuffer(data, dtype=np.uint8).reshape(groups, bits)
    word = raw.view("<u8").reshape(groups, 1).astype(np.uint64)
    shifts = (np.arange(8, dtype=np.uint64) * np.uint64(bits))[None, :]
    u = (word >> shifts) & np.uint64((1 << bits) - 1)
    return (u.ravel()[:n].astype(np.int16) - (1 << (bits - 1))).astype(np.int8)


def shuffle_bytes(data: bytes, width: int) -> bytes:
    """Byte planes: all first bytes of each `width`-byte element, then all second bytes..."""
    if width <= 1 or not data:
        return bytes(data)
    if len(data) % width:
        raise ValueError(f"{len(data)} bytes is not a multiple of the element width {width}")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, width).T.tobytes()


def unshuffle_bytes(data: bytes, width: int) -> bytes:
    if width <= 1 or not data:
        return bytes(data)
    if len(data) % width:
        raise ArtifactError(f"shuffled stream of {len(data)} bytes is not a multiple of {width}")
    return np.frombuffer(data, dtype=np.uint8).reshape(width, -1).T.tobytes()
