"""Bit packing, byte shuffling, our rANS coder and the ans context model, and the bounded
general-purpose codecs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golfpack.ans import codec as ansmodel
from golfpack.ans import tables as ent
from golfpack.errors import ArtifactError
from golfpack.format import codecs
from golfpack.format.binio import Reader, Writer
from golfpack.format.packing import (
    pack_bits,
    packed_size,
    shuffle_bytes,
    unpack_bits,
    unshuffle_bytes,
)


def _codes(bits, n, seed, spread=None):
    rng = np.random.default_rng(seed)
    qmax = (1 << (bits - 1)) - 1
    spread = spread if spread is not None else qmax / 3 + 0.1
    return np.clip(np.round(rng.standard_t(4, n) * spread), -qmax, qmax).astype(np.int8)


@settings(max_examples=80, deadline=None)
@given(bits=st.integers(2, 8), n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits, n, seed):
    codes = _codes(bits, n, seed)
    data = pack_bits(codes, bits)
    assert len(data) == packed_size(n, bits)
    assert np.array_equal(unpack_bits(data, bits, n), codes)


def test_pack_rejects_out_of_range_and_bad_sizes():
    with pytest.raises(ValueError):
        pack_bits(np.array([4], np.int8), 3)
    with pytest.raises(ArtifactError):
        unpack_bits(b"\x00" * 5, 6, 8)


@settings(max_examples=40, deadline=None)
@given(width=st.sampled_from([2, 4, 8]), n=st.integers(0, 50), seed=st.integers(0, 1000))
def test_shuffle_round_trip(width, n, seed):
    data = np.random.default_rng(seed).integers(0, 256, n * width, dtype=np.uint8).tobytes()
    assert unshuffle_bytes(shuffle_bytes(data, width), width) == data


def test_normalize_is_exact_and_validates():
    levels = ent.levels_from_counts(np.array([1000, 0, 3, 1, 50000, 7]))
    f = ent.normalize(levels, 15)
    assert f.sum() == 1 << 15 and f[1] == 0 and (f[[0, 2, 3, 4, 5]] >= 1).all()
    assert ent.normalize(np.zeros(4, np.uint8)).sum() == 0
    with pytest.raises(ArtifactError):
        ent.normalize(np.full(300, 255, np.uint8), 8)  # more symbols than slots
    # The weight table is far from rounding ties, so every implementation agrees on it.
    frac = (2.0 ** (10 + (np.arange(1, 256) - 1) / 16)) % 1.0
    assert np.min(np.abs(frac - 0.5)) > 1e-6


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000), alphabet=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       const=st.booleans())
def test_order0_round_trip(n, alphabet, seed, const):
    rng = np.random.default_rng(seed)
    sym = np.full(n, alphabet - 1) if const else rng.integers(0, alphabet, n)
    w = Writer()
    ent.encode_order0(sym, alphabet, w)
    r = Reader(w.getvalue())
    assert np.array_equal(ent.decode_order0(r, n, alphabet), sym)
    r.expect_end()


def test_order0_payload_within_half_percent_of_entropy():
    rng = np.random.default_rng(0)
    n = 1_200_000
    sym = np.clip(np.round(rng.standard_t(4, n) * 6), -31, 31).astype(np.int64) + 31
    w = Writer()
    ent.encode_order0(sym, 63, w)
    counts = np.bincount(sym, minlength=63).astype(np.float64)
    p = counts[counts > 0] / n
    h_bytes = -(counts[counts > 0] * np.log2(p)).sum() / 8
    assert len(w.getvalue()) <= 1.005 * h_bytes
    assert np.array_equal(ent.decode_order0(Reader(w.getvalue()), n, 63), sym)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), seed=st.integers(0, 2**32 - 1),
       shapes=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 13)), min_size=0,
                       max_size=4),
       const=st.booleans())
def test_ans_round_trip_odd_shapes(bits, seed, shapes, const):
    layout = ansmodel.Layout(shapes)
    codes = np.full(layout.n, -1, np.int8) if const else _codes(bits, layout.n, seed)
    payload, seg_bits = ansmodel.encode(codes, layout, bits)
    got, lay, got_bits, seg2 = ansmodel.decode(payload, layout.n)
    assert np.array_equal(got, codes) and lay.shapes == list(shapes) and got_bits == bits
    assert np.allclose(seg_bits, seg2)


def test_ans_context_model_beats_order0_on_rows_of_varying_spread():
    rng = np.random.default_rng(1)
    rows, cols = 600, 256
    spread = np.exp(rng.normal(0, 0.6, (rows, 1))) * 4
    codes = np.clip(np.round(rng.standard_t(5, (rows, cols)) * spread), -31, 31).astype(np.int8)
    layout = ansmodel.Layout([(rows, cols)])
    payload, _ = ansmodel.encode(codes.ravel(), layout, 6)
    counts = np.bincount(codes.ravel().astype(np.int64) + 31, minlength=63).astype(float)
    nz = counts[counts > 0]
    h0 = -(nz * np.log2(nz / nz.sum())).sum() / 8
    assert len(payload) < 0.97 * h0
    fit = ansmodel.fit_model(codes.ravel(), layout, 6)
    assert fit.K > 1


def test_ans_uses_column_classes_when_columns_differ():
    rng = np.random.default_rng(2)
    rows, cols = 400, 300
    col_scale = np.where(rng.random(cols) < 0.3, 0.3, 6.0)[None, :]
    codes = np.clip(np.round(rng.normal(0, 1, (rows, cols)) * col_scale), -31, 31).astype(np.int8)
    fit = ansmodel.fit_model(codes.ravel(), ansmodel.Layout([(rows, cols)]), 6)
    assert fit.C > 1


def test_ans_decode_rejects_corruption():
    codes = _codes(6, 5000, 3)
    layout = ansmodel.Layout([(50, 100)])
    payload = bytearray(ansmodel.encode(codes, layout, 6)[0])
    with pytest.raises(ArtifactError):
        ansmodel.decode(bytes(payload[:-3]), layout.n)
    with pytest.raises(ArtifactError):
        ansmodel.decode(bytes(payload) + b"\x00", layout.n)
    with pytest.raises(ArtifactError):
        ansmodel.decode(bytes(payload), 100)  # more codes than the caller allows
    payload[-5] ^= 0x41
    with pytest.raises(ArtifactError):
        ansmodel.decode(bytes(payload), layout.n)


def _empty_stream_with_many_tables(K: int, C: int, pb: int) -> bytes:
    """An ans payload declaring zero codes but K x C (empty) frequency tables."""
    w = Writer()
    for v in (1, 6, pb, 0):  # version, bits, prob_bits, flags
        w.u8(v)
    for v in (2, K, 0, 0, C, K, C):  # segments (K, 0) and (0, C): no codes; then K, C
        w.varint(v)
    for _ in range(K * C):
        w.varint(0)  # an empty table costs one byte
    for alphabet in (K, C):  # class maps exist only for more than one class
        if alphabet > 1:
            ent.encode_order0(np.arange(alphabet), alphabet, w, pb)
    ent.write_block(w, np.array([65536], np.uint32), np.zeros(0, np.uint16))
    return w.getvalue()


def test_slot_tables_are_bounded_by_the_declared_codes():
    """A few hundred bytes must not make the decoder build megabytes of slot tables."""
    p = _empty_stream_with_many_tables(51, 5, 14)  # 255 tables x 2^14 slots, zero codes
    assert len(p) < 400
    with pytest.raises(ArtifactError, match="too many"):
        ansmodel.decode(p, 0)
    codes, layout, _, _ = ansmodel.decode(_empty_stream_with_many_tables(1, 1, 12), 0)
    assert codes.size == 0 and layout.n == 0


@pytest.mark.parametrize("codec", ["store", "zlib", "zstd", "lzma", "brotli"])
def test_general_codecs_are_bounded(codec):
    data = bytes(range(256)) * 40
    blob = codecs.compress_general(codec, data)
    assert codecs.decompress_general(codec, blob, len(data)) == data
    with pytest.raises(ArtifactError, match="more than its declared"):
        codecs.decompress_general(codec, blob, len(data) - 1)
    with pytest.raises(ArtifactError):
        codecs.decompress_general(codec, blob, len(data) + 1)
    with pytest.raises(ArtifactError):
        codecs.decompress_general(codec, blob[: len(blob) // 2], len(data))


def test_auto_picks_the_smallest_candidate():
    codes = _codes(6, 20000, 4)
    layout = ansmodel.Layout([(100, 200)])
    content = codes.tobytes()
    auto = codecs.encode_stream(content, "codes", "auto", 1, codes, layout, 6)
    for codec in ("zstd", "brotli", "ans"):
        forced = codecs.encode_stream(content, "codes", codec, 1, codes, layout, 6)
        assert len(auto.payload) <= len(forced.payload)
        back, _, _ = codecs.decode_stream(codecs.CODECS[forced.codec],
                                          codecs.TRANSFORMS[forced.transform], forced.param,
                                          forced.payload, len(content))
        assert back == content
