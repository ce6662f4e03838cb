"""Stream codecs: general-purpose compressors, byte layouts, our `ans`, and `auto`.

A stream's *content* is either int8 codes (with the matrix layout and bit width) or opaque
bytes with an element width. Encoding = an optional transform (byte shuffle, N-bit packing)
then a codec. Decoding is bounded by the declared content length: no decompressor is ever
allowed to produce more than that, so a hostile stream cannot balloon memory.

`auto` picks the smallest candidate. Streams up to 128 KB try every candidate in full. For
bigger ones `ans` (codes streams) is encoded exactly and each general codec x layout is
estimated on a 128 KB sample; only candidates whose estimate comes within 0.5% of the best
run in full (brute-forcing brotli-11 on 27M codes alone costs about a minute).
"""

from __future__ import annotations

import lzma
import math
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from golfpack.ans import codec as ansmodel
from golfpack.ans import rans
from golfpack.errors import ArtifactError, GolfError
from golfpack.format.packing import pack_bits, shuffle_bytes, unpack_bits, unshuffle_bytes

CODECS = {"store": 0, "zlib": 1, "zstd": 2, "lzma": 3, "brotli": 4, "ans": 5}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
TRANSFORMS = {"none": 0, "shuffle": 1, "bitpack": 2}
TRANSFORM_NAMES = {v: k for k, v in TRANSFORMS.items()}
GENERAL = ("zstd", "brotli", "lzma", "zlib")
CHOICES = ("auto", "zstd", "zlib", "lzma", "brotli", "ans")
SAMPLE_BYTES = 1 << 17  # bigger streams estimate general codecs on a sample this size
SAMPLE_MARGIN = 0.995  # an estimate must come within 0.5% of the best to earn a full run
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


def _encode_one(codec, transform, param, content, codes=None):
    """A general-purpose codec over the (transformed) content."""
    t0 = time.perf_counter()
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


@dataclass
class Plan:
    """A stream's encoding decided but, for ans, not yet run: ans payloads of all streams
    are coded together in one batched rANS pass (finish_plans)."""

    general: Encoded | None
    ans: ansmodel.Prepared | None
    seconds: float
    raw_len: int
    # every candidate coded in full, by (codec, transform, param): the alternatives when a
    # codec does not pay for its decoder (choose_net_of_decoder)
    alts: dict = field(default_factory=dict)


def plan_stream(content: bytes, kind: str, choice: str = "auto", width: int = 1,
                codes: np.ndarray | None = None, layout: ansmodel.Layout | None = None,
                bits: int | None = None) -> Plan:
    """Choose the stream's codec (`choice` = a codec name or "auto")."""
    if choice not in CHOICES:
        raise GolfError(f"unknown codec {choice!r} (use one of {', '.join(CHOICES)})")
    t0 = time.perf_counter()
    opts = candidates(kind, choice, width, bits)
    prep = None
    if opts[0][0] == "ans":
        prep = ansmodel.prepare(codes, layout, bits)
        opts = opts[1:]
    best, alts = _plan_general(content, opts, codes, bits,
                               None if prep is None else prep.est_bytes)
    if prep is not None and best is not None:
        if abs(len(best.payload) - prep.est_bytes) <= 0.005 * prep.est_bytes + 64:
            # Too close to call on the estimate: code this one now and compare exactly.
            payload, seg_bits = ansmodel.finish(prep, *rans.encode_batch([prep.job])[0])
            coded = Encoded("ans", "none", 0, len(content), payload, 0.0, seg_bits)
            alts[("ans", "none", 0)] = coded
            if len(payload) <= len(best.payload):
                best = coded
            prep = None
        elif len(best.payload) < prep.est_bytes:
            prep = None
        else:
            best = None
    if best is not None:
        best.seconds = time.perf_counter() - t0
    return Plan(best, prep, time.perf_counter() - t0, len(content), alts)


def plan_general_stream(content: bytes, kind: str, choice: str, width: int = 1,
                        codes: np.ndarray | None = None, layout=None,
                        bits: int | None = None) -> Plan:
    """plan_stream for a general-purpose codec (`choice` in GENERAL), the same plan it
    makes, without reaching the ans coder: what a bundle carries for a zstd/brotli/lzma/zlib
    submission (golfpack.encode). `layout` is accepted and unused (ans only)."""
    if choice not in GENERAL:
        raise GolfError(f"unknown general codec {choice!r} (use one of {', '.join(GENERAL)})")
    t0 = time.perf_counter()
    best, alts = _plan_general(content, candidates(kind, choice, width, bits), codes, bits,
                               None)
    best.seconds = time.perf_counter() - t0
    return Plan(best, None, time.perf_counter() - t0, len(content), alts)


def _plan_general(content: bytes, opts, codes, bits, ans_est: float | None):
    """Code the general candidates `opts` -> (smallest Encoded or None, {option: Encoded}).
    `ans_est`: the ans estimate the candidates compete with (None: ans is not one)."""
    if len(content) > SAMPLE_BYTES and (len(opts) > 1 or (opts and ans_est is not None)):
        # Estimate every general candidate on a sample; run in full only those whose
        # estimate comes within 0.5% of the best estimate (and of ans, when it is one).
        # Bit packing is screened with zstd first: it rarely helps (0.5-0.75 bit/weight
        # worse in the records' measurements), so the slow codecs only try it if zstd does.
        est = {}
        for opt in sorted(opts, key=lambda o: (o[1] == "bitpack", o[0] != "zstd")):
            codec, transform, _ = opt
            if transform == "bitpack" and codec != "zstd" and \
                    est.get(("zstd", "bitpack", bits), 0) > est.get(("zstd", "none", 0), 1e30):
                continue
            est[opt] = _estimate(*opt, content, codes)
        bar = min(est.values())
        if ans_est is not None:
            bar = min(bar, ans_est)
        opts = [opt for opt in opts if opt in est and est[opt] * SAMPLE_MARGIN <= bar]
    best, alts = None, {}
    for codec, transform, param in opts:
        enc = _encode_one(codec, transform, param, content, codes)
        alts[(codec, transform, param)] = enc
        if best is None or len(enc.payload) < len(best.payload):
            best = enc
    return best, alts


def finish_plans(plans: list[Plan]) -> list[Encoded]:
    """Run the batched rANS pass for every ans plan -> one Encoded per plan."""
    t0 = time.perf_counter()
    todo = [p for p in plans if p.ans is not None]
    coded = rans.encode_batch([p.ans.job for p in todo])
    share = (time.perf_counter() - t0) / max(len(todo), 1)
    done = {}
    for p, (states, words) in zip(todo, coded, strict=True):
        payload, seg_bits = ansmodel.finish(p.ans, states, words)
        done[id(p)] = Encoded("ans", "none", 0, p.raw_len, payload, p.seconds + share, seg_bits)
    return [done[id(p)] if p.ans is not None else p.general for p in plans]


def encode_stream(content: bytes, kind: str, choice: str = "auto", width: int = 1,
                  codes: np.ndarray | None = None, layout: ansmodel.Layout | None = None,
                  bits: int | None = None) -> Encoded:
    """Encode one stream (plan + finish)."""
    return finish_plans([plan_stream(content, kind, choice, width, codes, layout, bits)])[0]


def _estimate(codec: str, transform: str, param: int, content: bytes, codes) -> float:
    """Stored size of the whole stream extrapolated from a 128 KB sample."""
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
        return decode_ans_streams([(transform_id, payload, raw_len)])[0]
    if transform == "bitpack":
        if not 1 <= param <= 8:
            raise ArtifactError(f"packed bit width {param} is outside 1..8")
        stored_len = -(-raw_len // 8) * param
    else:
        stored_len = raw_len
    data = decompress_general(codec, payload, stored_len)
    return _undo_transform(transform, param, data, raw_len), None, None


def decode_ans_streams(items) -> list[tuple[bytes, ansmodel.Layout, np.ndarray]]:
    """[(transform id, payload, raw_len)] of ans streams -> [(content, layout, segment
    bits)], every rANS block decoded in one batched loop."""
    for transform_id, _, _ in items:
        if transform_id != TRANSFORMS["none"]:
            raise ArtifactError("ans streams take no transform")
    out = []
    for (_, _, raw_len), (codes, layout, _, seg_bits) in zip(
            items, ansmodel.decode_many([(p, n) for _, p, n in items]), strict=True):
        if codes.size != raw_len:
            raise ArtifactError(f"ans stream holds {codes.size} codes, declared {raw_len}")
        out.append((codes.tobytes(), layout, seg_bits))
    return out


def option_features(codec: str, transform: str) -> set[str]:
    """The decoder sections a stream stored this way needs (golfpack.decoder)."""
    return {codec, transform} - {"store", "none"}


def choose_net_of_decoder(plans: list[Plan], cost_of) -> dict:
    """Drop codecs and transforms that save fewer bytes than their decoder code costs.

    `cost_of(features)` -> {feature: bytes it adds to the decoder}. Repeatedly, the feature
    whose saving over each stream's best alternative without it is furthest below its cost
    is dropped (its streams switch to that alternative) until every feature pays. Returns
    {feature: {saving, decoder_bytes, net, kept}} (saving None: no alternative was coded).
    """
    def current(p):
        if p.ans is not None:
            return option_features("ans", "none"), p.ans.est_bytes
        return option_features(p.general.codec, p.general.transform), len(p.general.payload)

    dropped, seen, out = set(), {}, {}
    while True:
        used = set().union(*(current(p)[0] for p in plans)) if plans else set()
        costs = cost_of(used)
        worst, seen = None, {}
        for f in sorted(used):
            saving, switch = 0.0, []
            for p in plans:
                feats, size = current(p)
                if f not in feats:
                    continue
                alts = [e for (c, t, _), e in p.alts.items()
                        if not option_features(c, t) & (dropped | {f})]
                if not alts:
                    saving = math.inf
                    break
                alt = min(alts, key=lambda e: len(e.payload))
                saving += len(alt.payload) - size
                switch.append((p, alt))
            seen[f] = (saving, costs.get(f, 0))
            margin = saving - costs.get(f, 0)
            if margin < 0 and (worst is None or margin < worst[0]):
                worst = (margin, f, switch)
        if worst is None:
            break
        _, f, switch = worst
        for p, alt in switch:
            p.general, p.ans = alt, None
        dropped.add(f)
        out[f] = _saving_row(*seen[f], kept=False)
    out.update({f: _saving_row(*v, kept=True) for f, v in seen.items()})
    return dict(sorted(out.items()))


def _saving_row(saving: float, cost: int, kept: bool) -> dict:
    sv = None if math.isinf(saving) else int(round(saving))
    return {"saving": sv, "decoder_bytes": int(cost), "net": None if sv is None else sv - cost,
            "kept": kept}
