"""Stream codecs: general-purpose compressors, byte layouts, our `ans`, and `auto`.

A stream's *content* is either int8 codes (with the matrix layout and bit width) or opaque
bytes with an element width. Encoding = an optional transform (byte shuffle, N-bit packing)
then a codec. Decoding is bounded by the declared content length: no decompressor is ever
allowed to produce more than that, so a hostile stream cannot balloon memory.

`auto` picks the smallest candidate. Streams up to 128 KB try every candidate in full. For
bigger ones `ans` (codes streams) is encoded exactly and each general codec x layout is
estimated on a 128 KB sample; only candidates whose estimate comes within 1% of the best
run in full (brute-forcing brotli-11 on 27M codes alone costs about a minute).
"""

from __future__ import annotations

import lzma
import time
import zlib
from dataclasses import dataclass

import numpy as np

from golfpack import ansmodel
from golfpack.errors import ArtifactError, GolfError
from golfpack.packing import pack_bits, shuffle_bytes, unpack_bits, unshuffle_bytes

CODECS = {"store": 0, "zlib": 1, "zstd": 2, "lzma": 3, "brotli": 4, "ans": 5}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
TRANSFORMS = {"none": 0, "shuffle": 1, "bitpack": 2}
TRANSFORM_NAMES = {v: k for k, v in TRANSFORMS.items()}
GENERAL = ("zstd", "brotli", "lzma", "zlib")
CHOICES = ("auto", "zstd", "zlib", "lzma", "brotli", "ans")
SAMPLE_BYTES = 1 << 17  # bigger streams estimate general codecs on a sample this size
SAMPLE_MARGIN = 0.99  # an estimate must come within 1% of the best to earn a full run
LZMA_MEMLIMIT = 1 << 28


@dataclass
class Encoded:
    """A stream ready to write: what it is, how it was stored, the stored bytes."""

    codec: str
    transform: str
    param: int  # shuffle width or packed bit width (0 when unused)
    raw_len: int
    payload: bytes
    seconds: float = 0.0
    segment_bits: np.ndarray | None = None  # ans: ideal bits per segment, for attribution


def compress_general(codec: str, data: bytes) -> bytes:
    if codec == "store":
        return bytes(data)
    if codec == "zlib":
        return zlib.compress(data, 9)
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=22).compress(data)
    if codec == "lzma":
        # preset 9e, with the dictionary no bigger than the data (same output, less memory).
        dict_size = min(1 << 26, max(1 << 12, 1 << max(len(data) - 1, 1).bit_length()))
        filt = {"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME,
                "dict_size": dict_size}
        return lzma.compress(data, format=lzma.FORMAT_ALONE, filters=[filt])
    if codec == "brotli":
        import brotli

        return brotli.compress(bytes(data), quality=11)
    raise GolfError(f"unknown codec {codec!r}")


def decompress_general(codec: str, data: bytes | memoryview, raw_len: int) -> bytes:
    """Decompress, producing at most raw_len + 1 bytes; anything but exactly raw_len fails."""
    data = bytes(data)
    try:
        if codec == "store":
            out = data
        elif codec == "zlib":
            d = zlib.decompressobj()
            out = d.decompress(data, raw_len + 1)
            if not d.eof or d.unused_data:
                raise ArtifactError("zlib stream is incomplete or has trailing data")
        elif codec == "zstd":
            import zstandard

            chunks, got = [], 0
            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                while got <= raw_len:
                    chunk = reader.read(raw_len + 1 - got)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
            out = b"".join(chunks)
        elif codec == "lzma":
            d = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=LZMA_MEMLIMIT)
            out = d.decompress(data, max_length=raw_len + 1)
            if not d.eof and len(out) <= raw_len:
                raise ArtifactError("lzma stream is truncated")
        elif codec == "brotli":
            import brotli

            d = brotli.Decompressor()
            try:
                out = d.process(data, output_buffer_limit=raw_len + 1)
            except TypeError:  # brotli < 1.2 has no output limit
                out = d.process(data)
            if len(out) <= raw_len and not d.is_finished():
                raise ArtifactError("brotli stream is truncated")
        else:
            raise ArtifactError(f"unknown codec {codec!r}")
    except ArtifactError:
        raise
    except Exception as exc:  # every decompressor has its own error types
        raise ArtifactError(f"{codec} stream does not decompress ({type(exc).__name__})") \
            from None
    if len(out) != raw_len:
        raise ArtifactError(f"{codec} stream holds {'more' if len(out) > raw_len else 'less'} "
                            f"than its declared {raw_len} bytes")
    return out


def _apply_transform(transform: str, param: int, content: bytes, codes=None) -> bytes:
    if transform == "none":
        return content
    if transform == "shuffle":
        return shuffle_bytes(content, param)
    if transform == "bitpack":
        return pack_bits(codes, param)
    raise GolfError(f"unknown transform {transform!r}")


def _undo_transform(transform: str, param: int, data: bytes, raw_len: int) -> bytes:
    if transform == "none":
        return data
    if transform == "shuffle":
        if not 2 <= param <= 8:
            raise ArtifactError(f"shuffle width {param} is outside 2..8")
        return unshuffle_bytes(data, param)
    if transform == "bitpack":
        return unpack_bits(data, param, raw_len).tobytes()
    raise ArtifactError(f"unknown transform id for {transform!r}")


def _encode_one(codec, transform, param, content, codes=None, layout=None, bits=None):
    t0 = time.perf_counter()
    if codec == "ans":
        payload, seg_bits = ansmodel.encode(codes, layout, bits)
        return Encoded("ans", "none", 0, len(content), payload, time.perf_counter() - t0,
                       seg_bits)
    data = _apply_transform(transform, param, content, codes)
    payload = compress_general(codec, data)
    return Encoded(codec, transform, param, len(content), payload, time.perf_counter() - t0)


def _sample(data: bytes, size: int) -> bytes:
    """Four evenly spread slices totalling ~size bytes (a cheap stand-in for the stream)."""
    if len(data) <= size:
        return data
    q = size // 4
    starts = np.linspace(0, len(data) - q, 4).astype(np.int64)
    return b"".join(data[s:s + q] for s in starts)


def candidates(kind: str, choice: str, width: int, bits: int | None) -> list[tuple[str, str, int]]:
    """(codec, transform, param) options a stream of this kind may use under `choice`."""
    if kind == "codes":
        general = [(c, "none", 0) for c in GENERAL] + [(c, "bitpack", bits) for c in GENERAL]
        if choice == "auto":
            return [("ans", "none", 0)] + general
        if choice == "ans":
            return [("ans", "none", 0)]
        return [(choice, "none", 0)]
    opts = [("none", 0)] + ([("shuffle", width)] if width > 1 else [])
    codecs = list(GENERAL) + ["store"] if choice in ("auto", "ans") else [choice]
    return [(c, t, p) for c in codecs for t, p in opts]


def encode_stream(content: bytes, kind: str, choice: str = "auto", width: int = 1,
                  codes: np.ndarray | None = None, layout: ansmodel.Layout | None = None,
                  bits: int | None = None) -> Encoded:
    """Encode one stream with `choice` (a codec name or "auto")."""
    if choice not in CHOICES:
        raise GolfError(f"unknown codec {choice!r} (use one of {', '.join(CHOICES)})")
    opts = candidates(kind, choice, width, bits)
    if len(opts) == 1:
        return _encode_one(*opts[0], content, codes, layout, bits)
    best = None
    if opts[0][0] == "ans":
        best = _encode_one("ans", "none", 0, content, codes, layout, bits)
        opts = opts[1:]
    if len(content) > SAMPLE_BYTES:
        # Estimate every general candidate on a sample; run in full only those whose
        # estimate comes within 1% of the best estimate (and of ans, when ans ran).
        est = {opt: _estimate(*opt, content, codes) for opt in opts}
        bar = min(est.values())
        if best is not None:
            bar = min(bar, len(best.payload))
        opts = [opt for opt in opts if est[opt] * SAMPLE_MARGIN <= bar]
    for codec, transform, param in opts:
        enc = _encode_one(codec, transform, param, content, codes, layout, bits)
        if best is None or len(enc.payload) < len(best.payload):
            best = enc
    return best


def _estimate(codec: str, transform: str, param: int, content: bytes, codes) -> float:
    """Stored size of the whole stream extrapolated from a ~256 KB sample."""
    if transform == "bitpack":
        n = min(codes.size, SAMPLE_BYTES)
        sample = pack_bits(np.asarray(codes).ravel()[:n], param)
        return len(compress_general(codec, sample)) / max(n, 1) * len(content)
    sample = _sample(_apply_transform(transform, param, content), SAMPLE_BYTES)
    return len(compress_general(codec, sample)) / max(len(sample), 1) * len(content)


def decode_stream(codec_id: int, transform_id: int, param: int, payload: bytes | memoryview,
                  raw_len: int):
    """Stored bytes -> (content bytes, exactly raw_len of them; ans layout or None; ans ideal
    bits per segment or None). Raises ArtifactError on anything malformed."""
    codec = CODEC_NAMES.get(codec_id)
    transform = TRANSFORM_NAMES.get(transform_id)
    if codec is None:
        raise ArtifactError(f"unknown codec id {codec_id}")
    if transform is None:
        raise ArtifactError(f"unknown transform id {transform_id}")
    if codec == "ans":
        if transform != "none":
            raise ArtifactError("ans streams take no transform")
        codes, layout, _, seg_bits = ansmodel.decode(payload, raw_len)
        if codes.size != raw_len:
            raise ArtifactError(f"ans stream holds {codes.size} codes, declared {raw_len}")
        return codes.tobytes(), layout, seg_bits
    if transform == "bitpack":
        if not 1 <= param <= 8:
            raise ArtifactError(f"packed bit width {param} is outside 1..8")
        stored_len = -(-raw_len // 8) * param
    else:
        stored_len = raw_len
    data = decompress_general(codec, payload, stored_len)
    return _undo_transform(transform, param, data, raw_len), None, None
