"""Parsing and validation of the artifact header (used by golfpack.format.reader).

Every rule here exists so that a corrupted, truncated or hostile file ends in one
ArtifactError line before any allocation sized by the file: digests first, then every
count against the bytes that remain, every size against MAX_TOTAL_RAW, every part against
its stream, and the streams against the file length.
"""

from __future__ import annotations

import json

from golfpack.errors import ArtifactError
from golfpack.format import codecs
from golfpack.format.binio import Reader
from golfpack.format.layout import (
    DIGEST,
    DTYPE_IDS,
    HEADER_CODECS,
    ITEMSIZE,
    MAGIC,
    MAX_HEADER_RAW,
    MAX_NDIM,
    MAX_PARAMS,
    MAX_TOTAL_RAW,
    PARAMS_PER_FILE_BYTE,
    PREFIX,
    VERSION,
    EntryInfo,
    PartRef,
    StreamInfo,
    digest,
    param_limit,
    quant_bits,
)

MAX_PARTS = 64
KNOWN_PARTS = {  # kind -> role -> allowed dtypes
    "quant": {"codes": ("int8",), "scales": ("float16",)},
    "float": {"data": ("float16", "float32")},
    "raw": {"data": ("uint8",)},
}


def parse(data: bytes, cls, max_params: int | None = MAX_PARAMS):
    """Validate everything but the stream contents -> cls(data, config, tok, streams,
    entries, header_bytes, header_codec)."""
    data = bytes(data)
    if len(data) < PREFIX + DIGEST:
        raise ArtifactError(f"{len(data)} bytes is too short to be a golf artifact")
    if data[:8] != MAGIC:
        raise ArtifactError("not a golf artifact (bad magic bytes)")
    version = int.from_bytes(data[8:10], "little")
    if version != VERSION:
        raise ArtifactError(f"artifact format version {version} is not supported "
                            f"(this golfpack reads version {VERSION})")
    flags = int.from_bytes(data[10:12], "little")
    if flags:
        raise ArtifactError(f"unknown header flags {flags:#x}")
    hl = int.from_bytes(data[12:16], "little")
    if hl > len(data) - PREFIX - DIGEST:
        raise ArtifactError(f"header declares {hl} bytes but the file has only "
                            f"{len(data) - PREFIX - DIGEST} (truncated)")
    end = PREFIX + hl
    if digest(data[:end]) != data[end:end + DIGEST]:
        raise ArtifactError("header checksum mismatch (corrupt or truncated header)")
    body = _header_body(data[PREFIX:end])
    header_codec = codecs.CODEC_NAMES[data[PREFIX]]
    r = Reader(body, "header")
    config, tok = _read_config(r)
    streams = _read_streams(r, len(data))
    entries = _read_entries(r, streams)
    r.expect_end()
    _check_allocation(streams, entries, len(data), max_params)
    data_start = end + DIGEST
    declared = sum(s.stored_len for s in streams)
    if declared != len(data) - data_start:
        raise ArtifactError(f"streams declare {declared} payload bytes but the file holds "
                            f"{len(data) - data_start} (truncated or padded)")
    offset = data_start
    for s in streams:
        s.offset = offset
        offset += s.stored_len
    _check_tiling(streams, entries)
    return cls(data, config, tok, streams, entries, data_start, header_codec)


def _check_allocation(streams, entries, file_bytes: int, max_params: int | None) -> None:
    """A file may make us allocate at most param_limit() parameters and 8 content bytes per
    parameter of that limit (checked before any stream is decoded)."""
    if max_params is None:  # the writer checking its own output
        return
    limit = param_limit(file_bytes, max_params)
    params = sum(e.params for e in entries)
    if params > limit:
        why = "the max_params ceiling" if limit == max_params else \
            f"{PARAMS_PER_FILE_BYTE} per byte of this {file_bytes:,}-byte file"
        raise ArtifactError(f"declares {params:,} parameters, more than {limit:,} "
                            f"({why}): refusing to allocate for them")
    raw = sum(s.raw_len for s in streams)
    if raw > 8 * limit:
        raise ArtifactError(f"streams declare {raw:,} content bytes, more than "
                            f"{8 * limit:,} (8 per parameter of the {limit:,} allowed)")


def _header_body(blob: bytes) -> bytes:
    r = Reader(blob, "header")
    codec_id = r.u8("header codec")
    name = codecs.CODEC_NAMES.get(codec_id)
    if name not in HEADER_CODECS:
        r.fail(f"unknown header codec id {codec_id}")
    raw_len = r.varint("header size", limit=MAX_HEADER_RAW)
    return codecs.decompress_general(name, r.take(r.remaining, "header body"), raw_len)


def _read_config(r: Reader):
    text = r.text("config", limit=1 << 20)
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        r.fail("model config is not valid JSON")
    if not isinstance(config, dict):
        r.fail("model config is not a JSON object")
    has_tok = r.u8("tokenizer flag")
    if has_tok > 1:
        r.fail(f"bad tokenizer flag {has_tok}")
    tok = None
    if has_tok:
        sha = bytes(r.take(32, "tokenizer sha256"))
        tok = (sha, r.varint("vocab size", limit=1 << 24))
    return config, tok


def _read_streams(r: Reader, file_len: int) -> list[StreamInfo]:
    n = r.varint("stream count", limit=r.remaining // 14)
    streams, total_raw, names = [], 0, set()
    for _ in range(n):
        name = r.text("stream name", limit=4096)
        codec_id, transform_id, param = r.u8("codec"), r.u8("transform"), r.u8("param")
        codec = codecs.CODEC_NAMES.get(codec_id)
        transform = codecs.TRANSFORM_NAMES.get(transform_id)
        if codec is None or transform is None:
            r.fail(f"stream {name!r}: unknown codec {codec_id} or transform {transform_id}")
        if codec == "ans" and transform != "none":
            r.fail(f"stream {name!r}: ans streams take no transform (it has {transform})")
        raw_len = r.varint("raw length", limit=MAX_TOTAL_RAW)
        stored_len = r.varint("stored length", limit=file_len)
        checksum = bytes(r.take(DIGEST, "stream checksum"))
        total_raw += raw_len
        if total_raw > MAX_TOTAL_RAW:
            r.fail(f"streams declare more than {MAX_TOTAL_RAW} content bytes")
        if name in names:
            r.fail(f"duplicate stream name {name!r}")
        names.add(name)
        streams.append(StreamInfo(name, codec, transform, param, raw_len, stored_len, checksum))
    return streams


def _read_entries(r: Reader, streams: list[StreamInfo]) -> list[EntryInfo]:
    n = r.varint("entry count", limit=r.remaining // 8)
    entries, names = [], set()
    for _ in range(n):
        name = r.text("tensor name", limit=4096)
        if not name or name in names:
            r.fail(f"empty or duplicate tensor name {name!r}")
        names.add(name)
        kind = r.text("kind", limit=64)
        dtype = _dtype(r, "tensor dtype")
        ndim = r.varint("ndim", limit=MAX_NDIM)
        shape = tuple(r.varint("dim", limit=MAX_TOTAL_RAW) for _ in range(ndim))
        numel = 1
        for d in shape:
            numel *= d
        if numel > MAX_TOTAL_RAW:
            r.fail(f"tensor {name!r} declares {numel} elements")
        scheme = r.text("scheme", limit=256)
        meta_text = r.text("meta", limit=1 << 16)
        meta = {}
        if meta_text:
            try:
                meta = json.loads(meta_text)
            except (json.JSONDecodeError, RecursionError):
                r.fail(f"tensor {name!r}: meta is not valid JSON")
            if not isinstance(meta, dict):
                r.fail(f"tensor {name!r}: meta is not a JSON object")
        e = EntryInfo(name, kind, dtype, shape, scheme, meta)
        n_parts = r.varint("part count", limit=MAX_PARTS)
        for _ in range(n_parts):
            role = r.text("part role", limit=64)
            pdt = _dtype(r, "part dtype")
            si = r.varint("stream index", limit=max(len(streams) - 1, 0))
            if si >= len(streams):
                r.fail(f"tensor {name!r} refers to stream {si} of {len(streams)}")
            off = r.varint("part offset", limit=MAX_TOTAL_RAW)
            length = r.varint("part length", limit=MAX_TOTAL_RAW)
            if off + length > streams[si].raw_len:
                r.fail(f"tensor {name!r} part {role!r} runs past its stream")
            if length % ITEMSIZE[pdt]:
                r.fail(f"tensor {name!r} part {role!r}: {length} bytes is not whole {pdt}s")
            if any(p.role == role for p in e.parts):
                r.fail(f"tensor {name!r} has two {role!r} parts")
            e.parts.append(PartRef(role, pdt, si, off, length))
        _check_known_kind(r, e, numel)
        entries.append(e)
    return entries


def _dtype(r: Reader, field: str) -> str:
    i = r.u8(field)
    if i >= len(DTYPE_IDS):
        r.fail(f"unknown {field} id {i}")
    return DTYPE_IDS[i]


def _check_known_kind(r: Reader, e: EntryInfo, numel: int) -> None:
    """Entries of kinds this version knows must have exactly the parts their shape implies;
    unknown kinds are kept (a newer writer) and only fail when rebuilt."""
    spec = KNOWN_PARTS.get(e.kind)
    if spec is None:
        return
    roles = {p.role: p for p in e.parts}
    if set(roles) != set(spec):
        r.fail(f"tensor {e.name!r} ({e.kind}) has parts {sorted(roles)}, expected {sorted(spec)}")
    for role, p in roles.items():
        if p.dtype not in spec[role]:
            r.fail(f"tensor {e.name!r} part {role!r} has dtype {p.dtype}")
    if e.kind == "quant":
        rows = e.shape[0] if len(e.shape) >= 2 else 1
        if roles["codes"].length != numel or roles["scales"].length != 2 * rows:
            r.fail(f"tensor {e.name!r}: part sizes do not match its shape {list(e.shape)}")
        if not quant_bits(e.scheme):
            r.fail(f"tensor {e.name!r}: bad scheme {e.scheme!r}")
    elif e.kind == "float":
        p = roles["data"]
        if e.scheme != {"float16": "fp16", "float32": "fp32"}[p.dtype] or \
                p.length != numel * ITEMSIZE[p.dtype]:
            r.fail(f"tensor {e.name!r}: data does not match scheme {e.scheme!r} and shape")
    elif roles["data"].length != numel * ITEMSIZE[e.dtype]:
        r.fail(f"tensor {e.name!r}: raw data is not {numel} {e.dtype} values")


def _check_tiling(streams: list[StreamInfo], entries: list[EntryInfo]) -> None:
    """Parts must cover each stream's content exactly once, in order, with no gaps."""
    by_stream: dict[int, list[tuple[int, int, str]]] = {}
    for e in entries:
        for p in e.parts:
            by_stream.setdefault(p.stream, []).append((p.offset, p.length, e.name))
    for i, s in enumerate(streams):
        pos = 0
        for off, length, name in sorted(by_stream.get(i, [])):
            if off != pos:
                raise ArtifactError(f"stream {s.name!r}: part of {name!r} at {off}, "
                                    f"expected {pos} (gap or overlap)")
            pos += length
        if pos != s.raw_len:
            raise ArtifactError(f"stream {s.name!r}: parts cover {pos} of {s.raw_len} bytes")
        if s.codec == "ans" and any(p.dtype != "int8" for e in entries for p in e.parts
                                    if p.stream == i):
            raise ArtifactError(f"stream {s.name!r}: ans streams hold int8 codes only")
