"""Row references of the `ans` codec (rows coded as deltas to earlier rows): round trips on
random and adversarial layouts, the automatic choice, and hostile references refused."""

from __future__ import annotations

import numpy as np
import pytest

from golfpack.ans import codec, rans, rowref
from golfpack.ans.fit import Layout
from golfpack.errors import ArtifactError


def _encode(codes, layout, bits, refs="auto"):
    p = codec.prepare(codes, layout, bits, refs=refs)
    return codec.finish(p, *rans.encode_batch([p.job])[0])[0]


def _roundtrip(codes, layout, bits, refs="auto"):
    payload = _encode(codes, layout, bits, refs)
    out = codec.decode(payload, layout.n)[0]
    assert np.array_equal(out, np.asarray(codes, np.int8).ravel())
    return payload, codec.parse(payload, layout.n).refs


def _twins(rows=256, cols=48, bits=6, seed=0):
    rng = np.random.default_rng(seed)
    q = (1 << bits - 1) - 1
    x = np.clip(np.round(rng.standard_t(4, (rows, cols)) * 4), -q, q)
    for i in range(rows // 2, rows):  # near-twins of the first rows, saturating at ±q
        x[i] = np.clip(x[i % 16] + rng.integers(-1, 2, cols), -q, q)
    return x.astype(np.int8)


def test_twin_rows_are_referenced_and_smaller():
    x = _twins()
    lay = Layout([x.shape])
    with_refs, refs = _roundtrip(x.ravel(), lay, 6)
    without, none = _roundtrip(x.ravel(), lay, 6, refs=())
    assert len(refs) >= 64 and none == [] and len(with_refs) < 0.9 * len(without)
    assert with_refs[3] & 2 and not without[3] & 2


def test_no_twins_no_references():
    x = np.random.default_rng(1).integers(-31, 32, (128, 64)).astype(np.int8)
    payload, refs = _roundtrip(x.ravel(), Layout([x.shape]), 6)
    assert refs == [] and not payload[3] & 2


@pytest.mark.parametrize("bits", [2, 6, 8])
def test_all_rows_identical(bits):
    q = (1 << bits - 1) - 1
    row = np.random.default_rng(bits).integers(-q, q + 1, 40)
    x = np.tile(row, (64, 1)).astype(np.int8)
    payload, refs = _roundtrip(x.ravel(), Layout([x.shape]), bits)
    assert len(payload) <= len(_roundtrip(x.ravel(), Layout([x.shape]), bits, refs=())[0])
    if bits > 2:  # int2: column classes alone make the copies nearly free
        assert len(refs) == 63 and all(b >= 1 for _, b in refs)


@pytest.mark.parametrize("shape", [(1, 50), (1, 1), (3, 1), (0, 7)])
def test_degenerate_shapes(shape):
    x = np.random.default_rng(2).integers(-5, 6, shape).astype(np.int8)
    _roundtrip(x.ravel(), Layout([shape]), 4)


def test_explicit_references_chains_segments_and_max_gaps():
    rng = np.random.default_rng(3)
    shapes = [(300, 5), (0, 4), (200, 5), (2, 9)]
    lay = Layout(shapes)
    x = rng.integers(-7, 8, lay.n).astype(np.int8)
    # a chain inside one matrix (302 -> 301 -> 300) and an empty matrix between two others
    refs = [(1, 1), (299, 299), (300 + 1, 1), (300 + 2, 1), (499, 199), (501, 1)]
    _, got = _roundtrip(x, lay, 4, refs=refs)
    assert got == refs
    big = Layout([(70000, 1)])  # gaps and backs needing three-byte varints
    y = rng.integers(-1, 2, big.n).astype(np.int8)
    _, got = _roundtrip(y, big, 2, refs=[(69999, 69999)])
    assert got == [(69999, 69999)]


@pytest.mark.parametrize("refs", [[(0, 1)], [(300, 1)], [(5, 0)], [(4, 1), (4, 1)],
                                  [(600, 1)]])
def test_explicit_references_are_validated(refs):
    lay = Layout([(300, 5), (200, 5)])
    with pytest.raises(ValueError, match="row reference"):
        codec.prepare(np.zeros(lay.n, np.int8), lay, 4, refs=refs)


def _patched(gap=None, back=None):
    """A payload with one reference (row 7 -> 6) in layout [(4, 8), (4, 8)], with its
    gap/back bytes replaced (they sit right after the five segment varints)."""
    lay = Layout([(4, 8), (4, 8)])
    x = np.random.default_rng(4).integers(-3, 4, lay.n).astype(np.int8)
    p = bytearray(_encode(x, lay, 4, refs=[(7, 1)]))
    assert p[3] & 2 and p[9:12] == bytes([1, 7, 1])
    if gap is not None:
        p[10] = gap
    if back is not None:
        p[11] = back
    return bytes(p), lay


@pytest.mark.parametrize("gap,back", [(8, None), (None, 0), (None, 4), (4, 1), (7, 9)])
def test_hostile_references_are_one_line_errors(gap, back):
    payload, lay = _patched(gap, back)
    with pytest.raises(ArtifactError, match="row reference") as info:
        codec.decode(payload, lay.n)
    assert "\n" not in str(info.value)


def test_wrap_is_a_bijection():
    for q in (1, 31, 127):
        a = np.arange(-q, q + 1)
        for b in (-q, 0, q):
            d = rowref.wrap(a - b, q)
            assert d.min() >= -q and d.max() <= q
            assert np.array_equal(rowref.wrap(d + b, q), a)


def test_side_bytes_match_the_writer():
    from golfpack.format.binio import Writer

    for refs in ([], [(0 + 1, 1)], [(200, 3), (70000, 69000)]):
        w = Writer()
        rowref.write(w, refs)
        assert len(w) == rowref.side_bytes(refs)
