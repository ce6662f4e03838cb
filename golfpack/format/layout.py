"""The .golf format's constants and table records: what FORMAT.md specifies, as code shared
by the writer (golfpack.artifact) and the reader (golfpack.format.header, .reader)."""

from __future__ import annotations

import hashlib
import re
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
# What a file may make a reader allocate (FORMAT.md, "What a reader validates"): at most
# param_limit() parameters, and 8 content bytes per parameter of that limit.
MAX_PARAMS = 1 << 27  # 134,217,728: a 16 MB artifact cannot honestly hold more than ~10^8
PARAMS_PER_FILE_BYTE = 256
MIN_PARAM_LIMIT = 1 << 20
_SLICE_RE = re.compile(r"(.+)\[(\d+)\]", re.S)  # whole name (fullmatch), newlines too


def slice_name(bank: str, i: int) -> str:
    """The entry name of slice `i` of bank `bank` (FORMAT.md, Banks)."""
    return f"{bank}[{i}]"


def parse_slice(name: str) -> tuple[str, int] | None:
    """(bank, index) of a slice's entry name, else None."""
    m = _SLICE_RE.fullmatch(name)
    return (m.group(1), int(m.group(2))) if m else None


def param_limit(file_bytes: int, max_params: int = MAX_PARAMS) -> int:
    """Parameters a file of this size may declare: the ceiling, and 256 per file byte."""
    return min(int(max_params), max(MIN_PARAM_LIMIT, PARAMS_PER_FILE_BYTE * int(file_bytes)))


def quant_bits(scheme: str) -> int:
    """N of a quant entry's `intN[:...]` scheme (2..8), else 0. Only the bit width matters to
    a reader; the options after it record how the codes were chosen."""
    n = scheme[3:4]
    return int(n) if scheme[:3] == "int" and n and n in "2345678" and scheme[4:5] in ":" else 0


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
