"""Shard format: exact round trip, every malformed-header case, sidecar-safe globs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golfeval.data import shards
from golfeval.data.shards import ShardError


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 65535), min_size=0, max_size=3000))
def test_round_trip(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("s") / "fineweb_val_000000.bin"
    shards.write_shard(path, np.array(values, dtype=np.int64))
    assert os.path.getsize(path) == 1024 + 2 * len(values)
    back = shards.read_shard(path)
    assert back.dtype == np.uint16
    assert back.tolist() == values


def _valid(tmp_path, n=10):
    path = tmp_path / "fineweb_val_000000.bin"
    shards.write_shard(path, np.arange(n))
    return path


def _patch_word(path, index, value):
    raw = bytearray(path.read_bytes())
    raw[4 * index: 4 * index + 4] = int(value).to_bytes(4, "little", signed=True)
    path.write_bytes(bytes(raw))


def test_wrong_magic(tmp_path):
    p = _valid(tmp_path)
    _patch_word(p, 0, 12345)
    with pytest.raises(ShardError, match="wrong magic 12345"):
        shards.read_shard(p)


def test_wrong_version(tmp_path):
    p = _valid(tmp_path)
    _patch_word(p, 1, 7)
    with pytest.raises(ShardError, match="unsupported version 7"):
        shards.read_shard(p)


def test_size_mismatch(tmp_path):
    p = _valid(tmp_path)
    with open(p, "ab") as fh:
        fh.write(b"\0\0")
    with pytest.raises(ShardError, match="size mismatch"):
        shards.read_shard(p)


def test_truncated_tokens(tmp_path):
    p = _valid(tmp_path)
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(ShardError, match="truncated"):
        shards.read_shard(p)


def test_truncated_header(tmp_path):
    p = tmp_path / "fineweb_val_000000.bin"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(ShardError, match="truncated header"):
        shards.read_shard(p)


def test_short_non_shard_is_named_by_its_magic(tmp_path):
    """A file shorter than a header that is not a shard says so (what calibration relies on)."""
    p = tmp_path / "fineweb_train_000000.bin"
    p.write_bytes(b"\0" * 100)
    with pytest.raises(ShardError, match="wrong magic 0"):
        shards.read_shard(p)


def test_one_format_for_golfeval_and_golfpack(tmp_path):
    """golfeval reads shards with golfpack's format (golfpack may not import golfeval), and
    golfpack's calibration reader turns its errors into calibration errors."""
    import golfpack.shards
    from golfpack.hessian import shardread

    assert shards.read_shard is golfpack.shards.read_shard
    assert shards.ShardError is golfpack.shards.ShardError
    p = _valid(tmp_path)
    assert shardread.read_tokens(p).tolist() == list(range(10))
    assert isinstance(shardread.read_tokens(p), np.memmap)
    _patch_word(p, 1, 7)
    with pytest.raises(shardread.CalibrationDataError, match="unsupported version 7"):
        shardread.read_tokens(p)


def test_token_beyond_vocab(tmp_path):
    p = tmp_path / "fineweb_val_000000.bin"
    shards.write_shard(p, np.array([1, 5, 1100, 7]))
    with pytest.raises(ShardError, match="token id 1100 at position 2 is >= vocab size 1024"):
        shards.read_shard(p, vocab_size=1024)
    assert shards.read_shard(p, vocab_size=2048).tolist() == [1, 5, 1100, 7]


def test_error_names_file(tmp_path):
    p = _valid(tmp_path)
    _patch_word(p, 0, 1)
    with pytest.raises(ShardError) as exc:
        shards.read_shard(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_empty_glob(tmp_path):
    with pytest.raises(ShardError, match="no shards match"):
        shards.find_shards(tmp_path / "fineweb_val_*.bin")


def test_val_glob_skips_byte_sidecars(tmp_path):
    shards.write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(4))
    shards.write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.arange(4))
    found = shards.find_shards(tmp_path / "fineweb_val_*.bin")
    assert [os.path.basename(f) for f in found] == ["fineweb_val_000000.bin"]
    assert [os.path.basename(f) for f in shards.find_sidecars(tmp_path)] == [
        "fineweb_val_bytes_000000.bin"]


def test_split_separation(tmp_path):
    shards.write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(4))
    shards.write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(4))
    assert len(shards.find_shards(tmp_path, kind="train")) == 1
    with pytest.raises(ShardError, match="is a val shard but train shards were asked for"):
        shards.find_shards(tmp_path / "fineweb_*.bin", kind="train")


def test_write_refuses_overwrite(tmp_path):
    p = _valid(tmp_path)
    with pytest.raises(Exception, match="`force=True`"):
        shards.write_shard(p, np.arange(3))
    shards.write_shard(p, np.arange(3), force=True)
    assert shards.read_shard(p).tolist() == [0, 1, 2]


def test_load_tokens_concatenates_and_limits(tmp_path):
    shards.write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(5))
    shards.write_shard(tmp_path / "fineweb_train_000001.bin", np.arange(5, 9))
    assert shards.load_tokens(tmp_path, kind="train").tolist() == list(range(9))
    assert shards.load_tokens(tmp_path, kind="train", max_tokens=7).tolist() == list(range(7))
