"""The .ptz reader: every outer compression the records use, the byte shuffle, the
plain-data guard around torch.load, bounded decompression, one-line refusals."""

from __future__ import annotations

import io
import lzma
import os
import pickle
import zlib

import brotli
import numpy as np
import pytest
import torch
import zstandard

from golfpack.errors import CheckpointError
from golfpack.foreign.ptz import BSHF_MAGIC, load_ptz, looks_like_ptz


def _records_blob() -> tuple[bytes, dict]:
    torch.manual_seed(0)
    q = torch.randint(-31, 32, (6, 10), dtype=torch.int8)
    s = (torch.rand(6) * 0.01 + 0.001).half()
    small = torch.randn(10).half()
    obj = {"w": {"blocks.0.mlp.fc.weight.q": q, "blocks.0.mlp.fc.weight.scale": s,
                 "blocks.0.attn_scale": small},
           "m": {"blocks.0.mlp.fc.weight": "gptq (int6)",
                 "blocks.0.attn_scale": "passthrough (float16)"}}
    buf = io.BytesIO()
    torch.save(obj, buf)
    want = {"blocks.0.mlp.fc.weight": q.float() * s.float()[:, None],
            "blocks.0.attn_scale": small.float()}
    return buf.getvalue(), want


def _shuffle(data: bytes, stride: int = 2) -> bytes:
    """The records' byte-shuffle layout (a fact of their format): planes in order."""
    a = np.frombuffer(data, dtype=np.uint8)
    return BSHF_MAGIC + bytes([stride]) + b"".join(a[k::stride].tobytes() for k in range(stride))


@pytest.mark.parametrize("codec", ["lzma", "brotli", "zstd", "zlib", "none"])
@pytest.mark.parametrize("shuffled", [False, True])
def test_records_layout_every_codec(tmp_path, codec, shuffled):
    if codec == "none" and shuffled:
        pytest.skip("a bare shuffled payload is not a format anyone writes")
    raw, want = _records_blob()
    data = _shuffle(raw) if shuffled else raw
    packed = {"lzma": lambda d: lzma.compress(d, preset=6),
              "brotli": lambda d: brotli.compress(d, quality=5),
              "zstd": lambda d: zstandard.ZstdCompressor(level=3).compress(d),
              "zlib": lambda d: zlib.compress(d, 9), "none": lambda d: d}[codec](data)
    path = tmp_path / "m.ptz"
    path.write_bytes(packed)
    assert looks_like_ptz(path)
    fw = load_ptz(path)
    assert fw.layout == "records" and fw.shuffled == shuffled
    assert fw.compression == codec
    assert fw.quantized == {"blocks.0.mlp.fc.weight": "int6"}
    for k, v in want.items():
        assert torch.equal(fw.state_dict[k], v), k


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_code_in_the_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.BytesIO()
    torch.save({"w": {"x": _Evil()}, "m": {}}, buf)
    path = tmp_path / "evil.ptz"
    path.write_bytes(zlib.compress(buf.getvalue()))
    with pytest.raises(CheckpointError, match="refused"):
        load_ptz(path)
    path.write_bytes(lzma.compress(pickle.dumps({"w": _Evil()})))
    with pytest.raises(CheckpointError):
        load_ptz(path)
    assert not (tmp_path / "pwned_marker").exists()


def test_non_plain_objects_refused():
    from golfpack.foreign.safeload import check_plain

    check_plain({"a": [torch.zeros(1), 1, 2.0, "s", None, torch.float16]}, "x")
    with pytest.raises(CheckpointError, match="only tensors"):
        check_plain({"a": {1, 2}}, "x")
    with pytest.raises(CheckpointError, match="not a string"):
        check_plain({1: torch.zeros(1)}, "x")


def test_bounded_truncated_unknown_and_lrzip(tmp_path):
    raw, _ = _records_blob()
    path = tmp_path / "m.ptz"
    path.write_bytes(zlib.compress(raw))
    with pytest.raises(CheckpointError, match="more than 1,000 bytes"):
        load_ptz(path, max_raw=1000)
    path.write_bytes(lzma.compress(raw)[:-20])
    with pytest.raises(CheckpointError, match="lzma|truncated"):
        load_ptz(path)
    path.write_bytes(b"LRZI\x00\x06" + bytes(40))
    with pytest.raises(CheckpointError, match="lrzip"):
        load_ptz(path)
    path.write_bytes(b"\x01\x02garbage" * 10)
    assert not looks_like_ptz(path)
    with pytest.raises(CheckpointError, match="not a .ptz"):
        load_ptz(path)
    buf = io.BytesIO()
    torch.save({"something": torch.zeros(2), "else": 3}, buf)
    path.write_bytes(zlib.compress(buf.getvalue()))
    with pytest.raises(CheckpointError, match="unknown .ptz layout"):
        load_ptz(path)
