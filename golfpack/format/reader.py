"""Reading an artifact with numpy and the codec libraries alone (no torch, no click).

    art = load_artifact("model.golf")      # or parse_artifact(data)
    art.config; art.tokenizer_sha256; art.vocab_size; art.streams; art.entries
    art.decode_all(); art.arrays(entry)    # the stored parts as numpy arrays
    art.report()                           # exact accounting (golfpack.accounting)

Reading never executes code and validates every count, length and offset against the file
before allocating (golfpack.format.header); each stream is checked against its own digest
before decoding, and the decoded values against their entry (codes in range, finite scales).
golfpack.artifact adds the torch side (state_dict, QuantizedModel) on top of this class.
"""

from __future__ import annotations

import os

import numpy as np

from golfpack.errors import ArtifactError, read_file
from golfpack.format import codecs
from golfpack.format.layout import (
    MAX_PARAMS,
    NP_DTYPE,
    EntryInfo,
    PartRef,
    StreamInfo,
    digest,
    quant_bits,
)


class ArtifactHeader:
    """A parsed artifact's header and its raw payloads: what a writer reads back to check
    its own output and account for it (digests verified, nothing decoded), so the encode
    path carries no decoding code. Artifact adds the decoding."""

    def __init__(self, data: bytes, config, tok, streams, entries, header_bytes,
                 header_codec: str = "store"):
        self.data = data
        self.config: dict = config
        self.tokenizer_sha256: str | None = tok[0].hex() if tok else None
        self.vocab_size: int | None = tok[1] if tok else None
        self.streams: list[StreamInfo] = streams
        self.entries: list[EntryInfo] = entries
        self.header_bytes: int = header_bytes
        self.header_codec: str = header_codec
        self._content: dict[int, bytes] = {}
        self._seg_bits: dict[int, np.ndarray] = {}
        self._checked = False

    @property
    def file_bytes(self) -> int:
        return len(self.data)

    def verify(self) -> None:
        """Check every stream's digest (cheap) before any decoding work."""
        for s in self.streams:
            self._payload(s)

    def _payload(self, s: StreamInfo) -> memoryview:
        payload = memoryview(self.data)[s.offset:s.offset + s.stored_len]
        if digest(payload) != s.checksum:
            raise ArtifactError(f"stream {s.name!r}: checksum mismatch (corrupt payload)")
        return payload

    def report(self, qmodel=None) -> dict:
        """Exact accounting (golfpack.accounting) after every digest is verified."""
        from golfpack.accounting import artifact_report

        self.verify()
        return artifact_report(self, qmodel)


class Artifact(ArtifactHeader):
    """A parsed artifact: header fields now, streams decoded on demand."""

    def decode_all(self) -> None:
        """Verify every digest, decode every stream (all ans streams share one batched rANS
        loop), then check the values every known entry kind promises."""
        self.verify()
        todo = [i for i in range(len(self.streams)) if i not in self._content]
        ans = [i for i in todo if self.streams[i].codec == "ans"]
        for i in todo:
            if i not in ans:
                self.stream_content(i)
        if ans:
            items = [(codecs.TRANSFORMS[s.transform], self._payload(s), s.raw_len)
                     for s in (self.streams[i] for i in ans)]
            for i, (content, layout, seg_bits) in zip(ans, codecs.decode_ans_streams(items),
                                                       strict=True):
                self._store(i, content, layout, seg_bits)
        if not self._checked:
            for e in self.entries:
                check_values(e, self.arrays(e))
            self._checked = True

    def stream_content(self, i: int) -> bytes:
        """Decoded content of stream i (checksum verified first)."""
        if i not in self._content:
            s = self.streams[i]
            self._store(i, *codecs.decode_stream(
                codecs.CODECS[s.codec], codecs.TRANSFORMS[s.transform], s.param,
                self._payload(s), s.raw_len))
        return self._content[i]

    def _store(self, i: int, content: bytes, layout, seg_bits) -> None:
        if layout is not None:
            want = [codes_shape(e, p) for e, p in self._parts_of(i)]
            if list(layout.shapes) != want:
                raise ArtifactError(f"stream {self.streams[i].name!r}: ans layout does not "
                                    "match the tensor table")
            self._seg_bits[i] = seg_bits
        self._content[i] = content

    def _parts_of(self, i: int) -> list[tuple[EntryInfo, PartRef]]:
        found = [(e, p) for e in self.entries for p in e.parts if p.stream == i]
        return sorted(found, key=lambda ep: ep[1].offset)

    def arrays(self, e: EntryInfo) -> dict[str, np.ndarray]:
        """The stored parts of one entry by role: little-endian arrays of their dtype, codes
        parts shaped [rows, cols]."""
        out = {}
        for p in e.parts:
            raw = self.stream_content(p.stream)[p.offset:p.offset + p.length]
            arr = np.frombuffer(raw, dtype=NP_DTYPE[p.dtype])
            if is_codes(e, p):
                arr = arr.reshape(codes_shape(e, p))
            out[p.role] = arr
        return out

    def report(self, qmodel=None) -> dict:
        """Exact accounting, every stream decoded and checked first."""
        from golfpack.accounting import artifact_report

        self.decode_all()  # verifies every digest first
        return artifact_report(self, qmodel)


def is_codes(e: EntryInfo, p: PartRef) -> bool:
    """Integer codes (eligible for ans): quant's codes, and the parts other kinds list in
    meta["part_shapes"]."""
    return p.dtype == "int8" and ((e.kind == "quant" and p.role == "codes")
                                  or p.role in (e.meta.get("part_shapes") or {}))


def codes_shape(e: EntryInfo, p: PartRef) -> tuple[int, int]:
    """[rows, cols] of a codes part: from the tensor shape for quant entries (rows = dim 0,
    a 0-D or 1-D tensor is one row), from meta["part_shapes"] for other kinds (default one
    row)."""
    if e.kind == "quant":
        if len(e.shape) >= 2:
            return int(e.shape[0]), int(np.prod(e.shape[1:], dtype=np.int64))
        return 1, p.length
    shape = e.meta.get("part_shapes", {})
    shape = shape.get(p.role) if isinstance(shape, dict) else None
    if isinstance(shape, list) and len(shape) == 2 and all(
            type(v) is int and v >= 0 for v in shape) and shape[0] * shape[1] == p.length:
        return shape[0], shape[1]
    return 1, p.length


_SCALES = {"quant": ("scales",), "lqer": ("scales", "lr_as", "lr_bs")}


def check_values(e: EntryInfo, parts: dict[str, np.ndarray]) -> None:
    """Values a writer never produces are refused at load: quant codes outside ±qmax, and
    NaN or inf in scales or float data (compress refuses non-finite weights too)."""
    if e.kind == "quant":
        qmax = (1 << (quant_bits(e.scheme) - 1)) - 1
        codes = parts["codes"]
        if codes.size and int(np.abs(codes.astype(np.int16)).max()) > qmax:
            raise ArtifactError(f"entry {e.name!r}: codes exceed ±{qmax}")
    floats = [parts[r] for r in _SCALES.get(e.kind, ()) if r in parts]
    if e.kind == "float":
        floats.append(parts["data"])
    for arr in floats:
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ArtifactError(f"entry {e.name!r}: NaN or inf in its scales or data")
        if e.kind == "lqer" and arr.dtype.itemsize == 2 and \
                not np.isfinite(arr.view(np.float16)).all():
            raise ArtifactError(f"entry {e.name!r}: NaN or inf in its scales")


def load_artifact(path, max_params: int | None = MAX_PARAMS, cls=Artifact) -> Artifact:
    path = os.fspath(path)
    data = read_file(path, "artifact", ArtifactError)
    try:
        return parse_artifact(data, max_params, cls)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def parse_artifact(data: bytes, max_params: int | None = MAX_PARAMS, cls=Artifact) -> Artifact:
    """`max_params` bounds what the file may make us allocate (FORMAT.md); None lifts the
    bound (only for a writer re-reading its own output)."""
    from golfpack.format.header import parse

    return parse(data, cls, max_params)
