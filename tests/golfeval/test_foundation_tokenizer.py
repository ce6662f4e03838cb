"""Our tokenizer trainer uses the settings stored inside the challenge's own tokenizers.

A .model file is a protobuf; the few fields compared here are read from its wire format
directly (sentencepiece ships no protobuf schema without the protobuf package)."""

from __future__ import annotations

import struct

import pytest

# TrainerSpec field numbers (sentencepiece_model.proto) -> name
TRAINER_FIELDS = {3: "model_type", 10: "character_coverage", 25: "split_digits",
                  33: "hard_vocab_limit", 35: "byte_fallback", 40: "unk_id", 41: "bos_id",
                  42: "eos_id", 43: "pad_id"}
NORMALIZER_FIELDS = {1: "name", 3: "add_dummy_prefix"}


def _fields(buf: bytes) -> dict[int, object]:
    """First value of each top-level field of a protobuf message (wire format)."""
    out, i = {}, 0

    def varint(i):
        v = shift = 0
        while True:
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v, i

    while i < len(buf):
        key, i = varint(i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(i)
        elif wire == 5:
            v, i = round(struct.unpack("<f", buf[i:i + 4])[0], 6), i + 4
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = varint(i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.setdefault(field, v)
    return out


def _settings(path) -> dict[str, object]:
    top = _fields(open(path, "rb").read())
    trainer, normalizer = _fields(top[2]), _fields(top[3])
    got = {name: trainer.get(f) for f, name in TRAINER_FIELDS.items()}
    got.update({name: normalizer.get(f) for f, name in NORMALIZER_FIELDS.items()})
    return got


@pytest.mark.parametrize("name", ["fineweb_1024_bpe.model", "fineweb_8192_bpe.model"])
def test_trainer_settings_match_the_challenge_tokenizers(tiny_tokenizer, shared_data, name):
    ref = shared_data / name
    if not ref.exists():
        pytest.skip(f"{ref} is absent")
    ours, theirs = _settings(tiny_tokenizer), _settings(ref)
    assert ours == theirs
    assert theirs["character_coverage"] == 0.999 and theirs["byte_fallback"] == 1
