"""The .golf format's constants and table records: what FORMAT.md specifies, as code shared
by the writer (golfpack.artifact) and the reader (golfpack.format.header)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"GOLFPK\r\n"
VERSION = 1
PREFIX = 16  # magic + version + flags + header length
DIGEST = 8
DTYPE_IDS = ["float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32",
             "int64", "bool"]
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1,
            "int16": 2, "int32": 4, "int64": 8, "bool": 1}
NP_DTYPE = {"float32": "<f4", "float16": "<f2", "float64": "<f8", "int8": "i1", "uint8": "u1",
            "int16": "<i2", "int32": "<i4", "int64": "<i8", "bool": "u1", "bfloat16": "<u2"}
MAX_TOTAL_RAW = 1 << 31  # content bytes a reader will ever materialise (2 GiB)
MAX_HEADER_RAW = 1 << 24
MAX_NDIM = 8
HEADER_CODECS = ("store", "zlib", "brotli")


def digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


@dataclass
class StreamInfo:
    name: str
    codec: str
    transform: str
    param: int
    raw_len: int
    stored_len: int
    checksum: bytes
    offset: int = 0  # of the payload in the file
    seconds: float = 0.0


@dataclass
class PartRef:
    role: str
    dtype: str
    stream: int
    offset: int
    length: int


@dataclass
class EntryInfo:
    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    scheme: str
    meta: dict
    parts: list[PartRef] = field(default_factory=list)

    @property
    def params(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))
