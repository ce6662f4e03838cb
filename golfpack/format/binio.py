"""Little-endian binary writing and bounds-checked reading for the artifact format.

Every read checks the remaining length first and raises ArtifactError (one line, naming the
field) instead of IndexError/struct.error, so a truncated or corrupted file can never crash a
reader or make it allocate more than the bytes in hand justify.
"""

from __future__ import annotations

import struct

import numpy as np

from golfpack.errors import ArtifactError

MAX_VARINT_BYTES = 10


class Writer:
    def __init__(self):
        self.parts: list[bytes] = []

    def raw(self, b: bytes) -> None:
        self.parts.append(bytes(b))

    def u8(self, v: int) -> None:
        self.parts.append(struct.pack("<B", v))

    def u16(self, v: int) -> None:
        self.parts.append(struct.pack("<H", v))

    def u32(self, v: int) -> None:
        self.parts.append(struct.pack("<I", v))

    def varint(self, v: int) -> None:
        """Unsigned LEB128: 7 bits per byte, low bits first, high bit = more bytes follow."""
        if v < 0:
            raise ValueError("varint must be non-negative")
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
        self.parts.append(bytes(out))

    def svarint(self, v: int) -> None:
        """Signed varint via zigzag: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
        self.varint((v << 1) if v >= 0 else ((-v << 1) - 1))

    def text(self, s: str) -> None:
        b = s.encode("utf-8")
        self.varint(len(b))
        self.parts.append(b)

    def blob(self, b: bytes) -> None:
        self.varint(len(b))
        self.parts.append(bytes(b))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)


class Reader:
    """Reads fields from a bytes object; `what` names the structure in error messages."""

    def __init__(self, data: bytes | memoryview, what: str = "artifact"):
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def fail(self, msg: str):
        raise ArtifactError(f"{self.what}: {msg}")

    def take(self, n: int, field: str = "bytes") -> memoryview:
        if n < 0 or n > self.remaining:
            self.fail(f"truncated: {field} needs {n} bytes, {self.remaining} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str = "u8") -> int:
        return self.take(1, field)[0]

    def u16(self, field: str = "u16") -> int:
        return struct.unpack("<H", self.take(2, field))[0]

    def u32(self, field: str = "u32") -> int:
        return struct.unpack("<I", self.take(4, field))[0]

    def varint(self, field: str = "varint", limit: int = 1 << 62) -> int:
        v = shift = 0
        for _ in range(MAX_VARINT_BYTES):
            b = self.take(1, field)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                if v > limit:
                    self.fail(f"{field} = {v} exceeds its limit {limit}")
                return v
            shift += 7
        self.fail(f"{field}: varint longer than {MAX_VARINT_BYTES} bytes")

    def svarint(self, field: str = "svarint", limit: int = 1 << 61) -> int:
        z = self.varint(field, limit=2 * limit + 1)
        return (z >> 1) if not z & 1 else -((z + 1) >> 1)

    def text(self, field: str = "text", limit: int = 1 << 16) -> str:
        n = self.varint(f"{field} length", limit=limit)
        try:
            return bytes(self.take(n, field)).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{field} is not valid UTF-8")

    def blob(self, field: str = "blob", limit: int = 1 << 40) -> memoryview:
        n = self.varint(f"{field} length", limit=limit)
        return self.take(n, field)

    def array(self, dtype: str, count: int, field: str = "array") -> np.ndarray:
        """`count` little-endian items of `dtype` (bounds-checked before any allocation)."""
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * size, field), dtype=dtype)

    def expect_end(self) -> None:
        if self.remaining:
            self.fail(f"{self.remaining} unexpected trailing bytes")
