"""FORMAT.md is precise enough to read a file: a small independent reader written from the
document alone (plain Python, scalar rANS, no golfpack decoding code) must agree with
golfpack's reader on every tensor."""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import re
import struct
import zlib

import numpy as np
import torch

from golfpack.artifact import encode_artifact, parse_artifact
from golfpack.quant.qmodel import quantize_state_dict

DTYPES = ["float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32",
          "int64", "bool"]
NP = {"float32": "<f4", "float16": "<f2", "int8": "i1", "uint8": "u1"}


class R:
    def __init__(self, b):
        self.b, self.p = bytes(b), 0

    def take(self, n):
        out = self.b[self.p:self.p + n]
        assert len(out) == n
        self.p += n
        return out

    def u8(self):
        return self.take(1)[0]

    def varint(self):
        v = shift = 0
        while True:
            b = self.u8()
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    def svarint(self):
        z = self.varint()
        return z >> 1 if z % 2 == 0 else -((z + 1) >> 1)

    def text(self):
        return self.take(self.varint()).decode("utf-8")


def decompress(codec, data, n):
    if codec == 0:
        return data
    if codec == 1:
        return zlib.decompress(data)
    if codec == 2:
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=n)
    if codec == 3:
        return lzma.decompress(data)
    if codec == 4:
        import brotli

        return brotli.decompress(data)
    raise AssertionError(codec)


def freqs_from_levels(levels, P):
    M = 1 << P
    w = [0 if lv == 0 else round(2.0 ** (10 + (lv - 1) / 16)) for lv in levels]
    W = sum(w)
    f = [max(1, (2 * wi * M + W) // (2 * W)) if wi else 0 for wi in w]
    r = M - sum(f)
    if r >= 0:
        f[f.index(max(f))] += r
    else:
        for _ in range(-r):
            f[f.index(max(f))] -= 1
    return f


def read_table(r, size, symmetric_qmax=None):
    L = r.varint()
    levels = [0] * (size if symmetric_qmax is None else symmetric_qmax + 1)
    if L:
        start = r.svarint()
        for i, b in enumerate(r.take(L)):
            levels[start + i] = b
    if symmetric_qmax is None:
        return levels
    q = symmetric_qmax
    return [levels[abs(v - q)] for v in range(2 * q + 1)]


def rans_decode(r, n, contexts, tables, P):
    """The decoding procedure of FORMAT.md, one symbol at a time."""
    W = r.varint()
    states = list(struct.unpack(f"<{W}I", r.take(4 * W)))
    n_words = r.varint()
    words = list(struct.unpack(f"<{n_words}H", r.take(2 * n_words)))
    M, T = 1 << P, math.ceil(n / W) if n else 0
    cums = [[sum(f[:s]) for s in range(len(f))] for f in tables]
    out, wp = [None] * n, 0
    for t in range(T):
        for j in range(W):
            i = j * T + t
            if i >= n:
                continue
            x = states[j]
            f, cum = tables[contexts[i]], cums[contexts[i]]
            slot = x % M
            s = next(k for k in range(len(f)) if f[k] and cum[k] <= slot < cum[k] + f[k])
            x = f[s] * (x >> P) + slot - cum[s]
            if x < 1 << 16:
                x = (x << 16) | words[wp]
                wp += 1
            states[j] = x
            out[i] = s
    assert wp == n_words and all(x == 1 << 16 for x in states[:max(1, min(W, n))])
    return out


def decode_ans(payload):
    r = R(payload)
    assert r.u8() == 1
    bits, P, flags = r.u8(), r.u8(), r.u8()
    qmax = (1 << (bits - 1)) - 1
    shapes = [(r.varint(), r.varint()) for _ in range(r.varint())]
    refs, g = [], -1
    for _ in range(r.varint() if flags & 2 else 0):  # row references: (gap, back)
        g += 1 + r.varint()
        refs.append((g, r.varint()))
    K, C = r.varint(), r.varint()
    tables = [freqs_from_levels(read_table(r, 2 * qmax + 1, qmax if flags & 1 else None), P)
              for _ in range(K * C)]
    maps = []
    for count, alphabet in ((sum(a for a, _ in shapes), K), (sum(b for _, b in shapes), C)):
        if alphabet > 1:
            t = freqs_from_levels(read_table(r, alphabet), P)
            maps.append(rans_decode(r, count, [0] * count, [t], P))
        else:
            maps.append([0] * count)
    ctx, r0, c0 = [], 0, 0
    for rows, cols in shapes:
        for a in range(rows):
            ctx += [maps[0][r0 + a] * C + maps[1][c0 + b] for b in range(cols)]
        r0, c0 = r0 + rows, c0 + cols
    sym = rans_decode(r, len(ctx), ctx, tables, P)
    assert r.p == len(r.b)
    starts, rows = {}, 0  # global row -> (segment's first row, offset of the row's codes)
    offset = 0
    for a, c in shapes:
        for k in range(a):
            starts[rows + k] = (rows, offset + k * c, c)
        rows, offset = rows + a, offset + a * c
    S = 2 * qmax + 1
    for g, back in refs:  # in increasing g, each from its already restored reference row
        first, at, c = starts[g]
        assert back >= 1 and g - back >= first
        ref = starts[g - back][1]
        sym[at:at + c] = [(sym[at + j] + sym[ref + j] - qmax) % S for j in range(c)]
    return bytes((s - qmax) & 0xFF for s in sym)


def read_file(data):
    assert data[:8] == b"GOLFPK\r\n" and struct.unpack("<HHI", data[8:16])[:2] == (1, 0)
    H = struct.unpack("<I", data[12:16])[0]
    assert hashlib.blake2b(data[:16 + H], digest_size=8).digest() == data[16 + H:24 + H]
    blob = R(data[16:16 + H])
    codec, n = blob.u8(), blob.varint()
    r = R(decompress(codec, blob.b[blob.p:], n))
    config = json.loads(r.text())
    tok = (r.take(32).hex(), r.varint()) if r.u8() else None
    streams = []
    offset = 24 + H
    for _ in range(r.varint()):
        name, codec, transform, param = r.text(), r.u8(), r.u8(), r.u8()
        raw_len, stored_len, digest = r.varint(), r.varint(), r.take(8)
        payload = data[offset:offset + stored_len]
        offset += stored_len
        assert hashlib.blake2b(payload, digest_size=8).digest() == digest
        if codec == 5:
            content = decode_ans(payload)
        else:
            content = decompress(codec, payload, raw_len)
            if transform == 1:
                content = np.frombuffer(content, np.uint8).reshape(param, -1).T.tobytes()
            assert transform != 2  # (bit packing is not chosen for these streams)
        assert len(content) == raw_len
        streams.append(content)
    assert offset == len(data)
    tensors = {}
    for _ in range(r.varint()):
        name, kind, dtype = r.text(), r.text(), DTYPES[r.u8()]
        shape = tuple(r.varint() for _ in range(r.varint()))
        _scheme, _meta = r.text(), r.text()
        parts = {}
        for _ in range(r.varint()):
            role, pdt, si, off, length = r.text(), DTYPES[r.u8()], r.varint(), r.varint(), \
                r.varint()
            parts[role] = np.frombuffer(streams[si][off:off + length], NP[pdt])
        if kind == "quant":
            rows = shape[0] if len(shape) >= 2 else 1
            w = parts["codes"].astype(np.float32).reshape(rows, -1) * \
                parts["scales"].astype(np.float32)[:, None]
            tensors[name] = w.reshape(shape)
        elif kind == "float":
            tensors[name] = parts["data"].astype(np.float32).reshape(shape)
        else:
            tensors[name] = (dtype, parts["data"].tobytes())
    assert r.p == len(r.b)
    return config, tok, stack_banks(tensors)


def stack_banks(tensors):
    """Entries named `B[i]`, i = 0..L-1, become one [L, rows, cols] tensor `B` (FORMAT.md)."""
    banks = {}
    for name in list(tensors):
        m = re.fullmatch(r"(.+)\[(\d+)\]", name, re.S)
        if m:
            assert m[1] not in tensors
            banks.setdefault(m[1], {})[int(m[2])] = tensors.pop(name)
    for bank, parts in banks.items():
        assert sorted(parts) == list(range(len(parts)))
        tensors[bank] = np.stack([parts[i] for i in range(len(parts))])
    return tensors


def test_independent_reader_agrees():
    g = torch.Generator().manual_seed(0)

    def mixed(rows, cols):
        """Sparse rows beside dense ones, and quiet columns: row and column classes pay."""
        w = torch.randn(rows, cols, generator=g)
        w[: rows // 2] *= (torch.rand(rows // 2, cols, generator=g) < 0.1).float() * 5
        w[:, : cols // 4] *= 0.02
        return w

    sd = {
        "tok_emb.weight": torch.randn(40, 24, generator=g) * 0.02,
        "blocks.0.mlp.fc.weight": mixed(96, 48),
        "blocks.1.mlp.fc.weight": mixed(96, 48),
        "blocks.0.attn_scale": torch.rand(24, generator=g),
        "blocks.0.norm.weight": torch.randn(6, generator=g),
        "step": torch.tensor([7, 8], dtype=torch.int64),
    }
    qm = quantize_state_dict(sd, "@control=fp32;@small(10)=fp16;tok_emb*=int8:sdclip(12);"
                                 "*=int5:gptq-lite")
    data, _ = encode_artifact(qm, {"model_dim": 24}, codec="ans",
                              tokenizer={"sha256": "ab" * 32, "vocab_size": 40})
    art = parse_artifact(data)
    ans = [s for s in art.streams if s.codec == "ans"]
    assert len(ans) >= 2
    from golfpack.ans import codec as ansmodel
    parsed = [ansmodel.parse(art._payload(s), s.raw_len) for s in ans]
    assert any(len(p.map_jobs) == 2 for p in parsed)  # row and column classes exercised
    config, tok, tensors = read_file(data)
    assert config == {"model_dim": 24} and tok == ("ab" * 32, 40)
    ours = parse_artifact(data).state_dict()
    for name, t in ours.items():
        if t.dtype == torch.int64:
            assert tensors[name] == ("int64", t.numpy().tobytes())
        else:
            assert np.array_equal(tensors[name], t.float().numpy()), name


def test_independent_reader_row_references_and_banks():
    """The parts of the pages the first test does not reach: an `ans` stream with row
    references (near-twin embedding rows) and a bank stored as slices, stacked back."""
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(96, 32, generator=g)
    emb[48:] = emb[torch.arange(48) % 6] + 0.02 * torch.randn(48, 32, generator=g)
    sd = {"tok_emb.weight": emb, "qo_bank": torch.randn(3, 32, 32, generator=g)}
    data, _ = encode_artifact(quantize_state_dict(sd, "@control=fp32;*=int6"), {}, codec="ans")
    art = parse_artifact(data)
    from golfpack.ans import codec as ansmodel

    refs = [len(ansmodel.parse(art._payload(s), s.raw_len).refs)
            for s in art.streams if s.codec == "ans"]
    assert max(refs) >= 16  # row references exercised
    _, _, tensors = read_file(data)
    ours = art.state_dict()
    assert set(tensors) == set(ours) and ours["qo_bank"].shape == (3, 32, 32)
    for name, t in ours.items():
        assert np.array_equal(tensors[name], t.float().numpy()), name
