"""Hostile artifacts with valid checksums (issue: bounded memory, no silent wrong numbers):
a file declaring far more parameters than its size or the ceiling allows is refused before
anything is allocated, and NaN/inf scales or float data are refused at load — by golfpack's
reader, by `inspect`/`unpack`, and by the generated decoder alike."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from artifactbytes import reseal
from click.testing import CliRunner

from golfpack import decoder as gd
from golfpack.artifact import encode_artifact, parse_artifact
from golfpack.cli import main
from golfpack.errors import ArtifactError
from golfpack.format.binio import Writer
from golfpack.format.layout import digest
from golfpack.quant.qmodel import quantize_state_dict


def _decoder():
    import types

    mod = types.ModuleType("golf_decode")
    exec(compile(gd.decoder_source(), "golf_decode.py", "exec"), mod.__dict__)
    return mod


DEC = _decoder()


def zero_bomb(rows: int = 1 << 15, cols: int = 1 << 14) -> bytes:
    """A valid-checksum artifact: one int2 tensor of rows x cols zero codes (2^29 by
    default), its codes a zstd frame of zeros streamed in 1 MiB chunks, scales stored."""
    import zstandard

    n = rows * cols
    c = zstandard.ZstdCompressor(level=3).compressobj()
    chunk = bytes(1 << 20)
    codes = b"".join(c.compress(chunk) for _ in range(n >> 20)) + c.compress(bytes(n % (1 << 20)))
    codes += c.flush()
    scales = np.zeros(rows, np.float16).tobytes()
    w = Writer()
    w.text("{}")
    w.u8(0)
    w.varint(2)
    for name, codec, payload, raw in (("codes", 2, codes, n), ("scales", 0, scales, 2 * rows)):
        w.text(name)
        for v in (codec, 0, 0):
            w.u8(v)
        w.varint(raw)
        w.varint(len(payload))
        w.raw(digest(payload))
    w.varint(1)
    w.text("w")
    w.text("quant")
    w.u8(0)
    w.varint(2)
    w.varint(rows)
    w.varint(cols)
    w.text("int2:amax")
    w.text("")
    w.varint(2)
    for role, dt, si, length in (("codes", 4, 0, n), ("scales", 1, 1, 2 * rows)):
        w.text(role)
        w.u8(dt)
        w.varint(si)
        w.varint(0)
        w.varint(length)
    return reseal(w.getvalue(), codes + scales)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.golf"
    path.write_bytes(zero_bomb())
    return path


def test_memory_bomb_is_refused_before_allocating(bomb):
    data = bomb.read_bytes()
    assert len(data) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match="parameters"):
            parse_artifact(data).report()
        with pytest.raises(DEC.GolfDecodeError, match="params"):
            DEC.parse(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak
    # a higher ceiling does not lift the bound relative to the file's size
    with pytest.raises(ArtifactError, match="parameters"):
        parse_artifact(data, max_params=1 << 30)


@pytest.mark.parametrize("cmd", ["inspect", "unpack"])
def test_memory_bomb_cli_is_one_line_exit_2(bomb, tmp_path, cmd):
    args = [cmd, str(bomb)] + (["-o", str(tmp_path / "o.safetensors")] if cmd == "unpack" else [])
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "parameters" in res.output
    res = CliRunner().invoke(main, args + ["--max-params", "1000"])
    assert res.exit_code == 2 and "more than 1,000" in res.output


def test_max_params_ceiling_applies_to_honest_files():
    sd = {"w": torch.randn(64, 64)}
    data, _ = encode_artifact(quantize_state_dict(sd, "*=int6"), {}, codec="zstd")
    parse_artifact(data).state_dict()
    with pytest.raises(ArtifactError, match="4,096 parameters"):
        parse_artifact(data, max_params=4000)
    with pytest.raises(DEC.GolfDecodeError, match="4096 params"):
        DEC.parse(data, 4000)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["scales", "float"])
def test_nan_or_inf_is_refused_at_load(bad, where, tmp_path):
    qm = quantize_state_dict({"w": torch.randn(8, 16), "v": torch.randn(5)},
                             "@control=fp32;v=fp16;*=int6")
    e = qm["w"] if where == "scales" else qm["v"]
    part = e.parts["scales" if where == "scales" else "data"]
    arr = part.data.copy()
    arr[1] = bad
    part.data = arr
    data, _ = encode_artifact(qm, {}, codec="zstd")  # valid checksums, crafted values
    with pytest.raises(ArtifactError, match="NaN or inf"):
        parse_artifact(data).state_dict()
    with pytest.raises(ArtifactError, match="NaN or inf"):
        parse_artifact(data).report()
    with pytest.raises(DEC.GolfDecodeError, match="NaN or inf"):
        DEC.parse(data)
    path = tmp_path / "nan.golf"
    path.write_bytes(data)
    res = CliRunner().invoke(main, ["inspect", str(path)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "NaN or inf" in res.output
