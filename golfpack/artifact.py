"""Step 2 and 3 of the pipeline: a QuantizedModel <-> artifact bytes (the .golf format).

    data, report = encode_artifact(qmodel, config, codec="auto", tokenizer="sp.model")
    art = load_artifact("model.golf")          # or parse_artifact(data)
    art.state_dict(); art.config; art.tokenizer_sha256; art.vocab_size; art.report()

Layout (FORMAT.md has every byte): 8-byte magic, u16 version, u16 flags, u32 header length,
the header (compressed tensor table, stream table, config, tokenizer), an 8-byte BLAKE2b
digest of everything before it, then the stream payloads back to back. Parts of entries
(codes, scales, passthrough data) are pooled into streams by role and tensor family, so
all `mlp.fc` codes of every layer are coded together.

Reading is golfpack.format.reader (numpy and codec libraries only: never executes code,
validates every count, length and offset before allocating, checks every stream's digest
before decoding); this module adds the torch side (QuantizedModel, state_dict) on top.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from golfpack.ans.codec import Layout
from golfpack.errors import ArtifactError, GolfError, read_file
from golfpack.format import codecs, reader
from golfpack.format.binio import Writer
from golfpack.format.header import parse as parse_header
from golfpack.format.layout import (  # noqa: F401  (MAGIC, digest: part of this API)
    DTYPE_IDS,
    HEADER_CODECS,
    MAGIC,
    MAX_PARAMS,
    NP_DTYPE,
    VERSION,
    EntryInfo,
    PartRef,
    StreamInfo,
    digest,
    quant_bits,
)
from golfpack.quant.qmodel import RECONSTRUCT, Entry, Part, QuantizedModel, reconstruct


def _np_name(arr: np.ndarray) -> str:
    for name, code in NP_DTYPE.items():
        if name != "bfloat16" and np.dtype(code) == arr.dtype.newbyteorder("<"):
            return name
    raise ArtifactError(f"cannot store an array of dtype {arr.dtype}")


# ----------------------------------------------------------------------------- encoding
def _tokenizer_info(tokenizer) -> tuple[bytes, int] | None:
    if tokenizer is None:
        return None
    if isinstance(tokenizer, dict):
        return bytes.fromhex(tokenizer["sha256"]), int(tokenizer["vocab_size"])
    path = os.fspath(tokenizer)
    raw = read_file(path, "tokenizer", ArtifactError)
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_proto=raw)
    except Exception:
        raise ArtifactError(f"{path} is not a sentencepiece model") from None
    return hashlib.sha256(raw).digest(), int(sp.get_piece_size())


def _stream_key(role: str, part: Part) -> str:
    if part.coding == "codes":
        return f"{role}:{part.group or role}:int{part.bits}"
    return f"{role}:{part.group or role}:{_np_name(part.data)}"


def stream_groups(qmodel: QuantizedModel) -> dict[str, list[tuple[int, str, Part]]]:
    """The artifact's streams: every part pooled by role, group and type, in entry order
    -> {stream name: [(entry index, role, part)]}."""
    return _stream_groups(qmodel.entries)


def _stream_groups(entries: list[Entry]) -> dict[str, list[tuple[int, str, Part]]]:
    groups: dict[str, list[tuple[int, str, Part]]] = {}
    for i, e in enumerate(entries):
        for role, part in e.parts.items():
            groups.setdefault(_stream_key(role, part), []).append((i, role, part))
    return groups


def encode_artifact(qmodel: QuantizedModel, config: dict, codec: str = "auto", tokenizer=None,
                    on_step=None, decoder_mode: str | None = None) -> tuple[bytes, dict]:
    """Encode a QuantizedModel (+ model config, tokenizer path or {sha256, vocab_size})
    into artifact bytes. Returns (bytes, report) — the report is `Artifact.report()`.
    With `decoder_mode` ("raw"/"minified": how the decoder is counted) and codec "auto",
    codecs and transforms whose decoder code costs more than they save are not used
    (report["codec_savings"] has each one's saving net of its decoder). The bytes are read
    back (header and every digest checked) before they are returned."""
    if codec not in codecs.CHOICES:
        raise ArtifactError(f"unknown codec {codec!r} (use one of {', '.join(codecs.CHOICES)})")
    keys, refs, plans = plan_streams(qmodel.entries, codec, codecs.plan_stream, Layout,
                                     on_step)
    savings = None
    if decoder_mode is not None and codec == "auto":
        from golfpack import decoder

        kinds = {e.kind for e in qmodel.entries}
        savings = codecs.choose_net_of_decoder(
            plans, lambda used: {f: c for f, c in decoder.feature_costs(
                used | kinds, decoder_mode, estimate=True).items() if f in used})
    if on_step:
        on_step("rANS")
    data, streams, seg_bits = assemble(qmodel.entries, config, tokenizer, keys, refs,
                                       codecs.finish_plans(plans))
    # the header-only reader: the check needs no decoding code (nor a bundle to carry it)
    art = parse_header(data, reader.ArtifactHeader, None)
    art._seg_bits = seg_bits
    for s_in, s_out in zip(streams, art.streams, strict=True):
        s_out.seconds = s_in.seconds
    report = art.report(qmodel=qmodel)
    if savings is not None:
        report["codec_savings"] = savings
    return data, report


def plan_streams(entries: list[Entry], codec: str, plan, layout=None, on_step=None):
    """Pool the parts into streams and plan each with `plan` (codecs.plan_stream, or
    codecs.plan_general_stream where ans is not wanted; `layout` builds the ans layout
    from the codes shapes) -> (stream names, {entry index: [PartRef]}, plans)."""
    plans, keys, refs = [], [], {i: [] for i in range(len(entries))}
    for si, (key, members) in enumerate(_stream_groups(entries).items()):
        if on_step:
            on_step(key)
        first = members[0][2]
        offset = 0
        chunks = []
        for i, role, part in members:
            arr = np.ascontiguousarray(part.data)
            b = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            refs[i].append(PartRef(role, "int8" if part.coding == "codes" else _np_name(arr),
                                   si, offset, len(b)))
            offset += len(b)
            chunks.append(b)
        content = b"".join(chunks)
        if first.coding == "codes":
            shapes = [matrix_shape(p.data) for _, _, p in members]
            codes = np.frombuffer(content, dtype=np.int8)
            plans.append(plan(content, "codes", codec, 1, codes,
                              None if layout is None else layout(shapes), first.bits))
        else:
            plans.append(plan(content, "bytes", codec, first.data.dtype.itemsize))
        keys.append(key)
    return keys, refs, plans


def assemble(entries: list[Entry], config: dict, tokenizer, keys, refs,
             encoded) -> tuple[bytes, list[StreamInfo], dict]:
    """The artifact bytes from the encoded streams (one codecs.Encoded per stream name)
    -> (bytes, [StreamInfo], {stream index: ans ideal bits per segment})."""
    streams, payloads, seg_bits_by_stream = [], [], {}
    for si, (key, enc) in enumerate(zip(keys, encoded, strict=True)):
        if enc.segment_bits is not None:
            seg_bits_by_stream[si] = enc.segment_bits
        streams.append(StreamInfo(key, enc.codec, enc.transform, enc.param, enc.raw_len,
                                  len(enc.payload), digest(enc.payload), seconds=enc.seconds))
        payloads.append(enc.payload)
    infos = [EntryInfo(e.name, e.kind, e.dtype, tuple(e.shape), e.scheme, _meta_of(e),
                       refs[i]) for i, e in enumerate(entries)]
    header = _header_bytes(config, _tokenizer_info(tokenizer), streams, infos)
    return header + b"".join(payloads), streams, seg_bits_by_stream


def _meta_of(e: Entry) -> dict:
    """Entry meta as stored: kinds other than quant record the matrix shape of each codes
    part (quant derives it from the tensor shape)."""
    meta = dict(e.meta)
    if e.kind != "quant":
        shapes = {role: list(matrix_shape(p.data)) for role, p in e.parts.items()
                  if p.coding == "codes"}
        if shapes:
            meta["part_shapes"] = shapes
    return meta


def matrix_shape(codes: np.ndarray) -> tuple[int, int]:
    """The (rows, cols) a codes part is modelled as: 1-D codes are one row."""
    if codes.ndim == 2:
        return int(codes.shape[0]), int(codes.shape[1])
    return 1, int(codes.size)


def _header_bytes(config, tok, streams, entries) -> bytes:
    w = Writer()
    try:
        w.text(json.dumps(config, sort_keys=True, separators=(",", ":")))
    except TypeError as exc:
        raise ArtifactError(f"config is not JSON-serialisable: {exc}") from None
    if tok is None:
        w.u8(0)
    else:
        w.u8(1)
        w.raw(tok[0])
        w.varint(tok[1])
    w.varint(len(streams))
    for s in streams:
        w.text(s.name)
        w.u8(codecs.CODECS[s.codec])
        w.u8(codecs.TRANSFORMS[s.transform])
        w.u8(s.param)
        w.varint(s.raw_len)
        w.varint(s.stored_len)
        w.raw(s.checksum)
    w.varint(len(entries))
    for e in entries:
        w.text(e.name)
        w.text(e.kind)
        w.u8(DTYPE_IDS.index(e.dtype))
        w.varint(len(e.shape))
        for d in e.shape:
            w.varint(d)
        w.text(e.scheme)
        w.text(json.dumps(e.meta, sort_keys=True, separators=(",", ":")) if e.meta else "")
        w.varint(len(e.parts))
        for p in e.parts:
            w.text(p.role)
            w.u8(DTYPE_IDS.index(p.dtype))
            w.varint(p.stream)
            w.varint(p.offset)
            w.varint(p.length)
    body = w.getvalue()
    # The table is mostly repetitive names: store it compressed when that is smaller.
    packed = min(((c, codecs.compress_general(c, body)) for c in HEADER_CODECS),
                 key=lambda cp: len(cp[1]))
    inner = Writer()
    inner.u8(codecs.CODECS[packed[0]])
    inner.varint(len(body))
    inner.raw(packed[1])
    blob = inner.getvalue()
    head = MAGIC + VERSION.to_bytes(2, "little") + (0).to_bytes(2, "little") + \
        len(blob).to_bytes(4, "little") + blob
    return head + digest(head)


# ----------------------------------------------------------------------------- reading
class Artifact(reader.Artifact):
    """golfpack.format.reader's numpy-only Artifact plus the torch side: the stored parts as
    a QuantizedModel and the rebuilt tensors."""

    def entry(self, e: EntryInfo) -> Entry:
        """The stored arrays of one entry, as a qmodel Entry."""
        parts = {role: Part(arr, "codes" if arr.ndim == 2 else "bytes")
                 for role, arr in self.arrays(e).items()}
        return Entry(e.name, e.shape, e.dtype, e.kind, e.scheme, parts, dict(e.meta))

    def quantized_model(self) -> QuantizedModel:
        """The codes, scales and passthrough data exactly as stored."""
        from golfpack.quant.scheme import family

        self.decode_all()
        qm = QuantizedModel([self.entry(e) for e in self.entries])
        for e in qm.entries:
            if e.kind == "quant":
                e.parts["codes"].bits = quant_bits(e.scheme)
                e.parts["codes"].group = e.parts["scales"].group = family(e.name)
            elif e.kind in ("float", "raw"):
                e.parts["data"].group = e.scheme if e.kind == "float" else e.dtype
        return qm

    def state_dict(self, original_dtypes: bool = False) -> dict:
        """Dequantized float32 tensors by original name; passthrough tensors in their dtype.
        `original_dtypes`: every tensor cast to the dtype it had when compressed (what
        `unpack` writes and the standalone decoder returns: a bf16 tok_emb comes back bf16),
        bank slices cast before they are stacked."""
        from golfpack.quant.qmodel import DTYPES

        self.decode_all()
        out = {}
        for e in self.entries:
            if e.kind not in RECONSTRUCT:
                raise ArtifactError(f"entry {e.name!r} has kind {e.kind!r}, which this "
                                    "golfpack cannot rebuild (a newer version wrote it)")
            out[e.name] = reconstruct(self.entry(e))
            if original_dtypes and e.dtype in DTYPES:
                out[e.name] = out[e.name].to(DTYPES[e.dtype])
        from golfpack.quant.banks import join_banks  # bank slices -> banks

        try:
            return join_banks(out)
        except GolfError as exc:
            raise ArtifactError(str(exc)) from None


def load_artifact(path, max_params: int | None = MAX_PARAMS) -> Artifact:
    return reader.load_artifact(path, max_params, Artifact)


def parse_artifact(data: bytes, max_params: int | None = MAX_PARAMS) -> Artifact:
    return reader.parse_artifact(data, max_params, Artifact)
