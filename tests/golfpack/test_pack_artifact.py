"""The artifact format: exact round trips, exact accounting, and robustness against
corrupted or hostile files (fuzzing with and without valid checksums)."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import torch
from artifactbytes import reseal, split

from golfpack import artifact
from golfpack.artifact import MAGIC, encode_artifact, load_artifact, parse_artifact
from golfpack.errors import ArtifactError
from golfpack.quant.qmodel import Entry, Part, QuantizedModel, quantize_state_dict

SPEC = "@control=fp32;@small(100)=fp16;tok_emb*=int8:gptq-lite;*.mlp.*=int5:amax;*=int6:gptq-lite"
CONFIG = {"vocab_size": 64, "num_layers": 2, "model_dim": 32, "num_heads": 4,
          "num_kv_heads": 2, "mlp_mult": 2}


def tiny_state(seed=0, dim=32, layers=2, vocab=64):
    from trainer.model import GPT, GPTConfig

    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab, num_layers=layers, model_dim=dim, num_heads=4,
                    num_kv_heads=2, mlp_mult=2)
    sd = GPT(cfg).state_dict()
    g = torch.Generator().manual_seed(seed)
    for k, v in sd.items():
        if v.dim() == 2 and k.endswith("weight"):
            rows = torch.exp(torch.randn(v.shape[0], 1, generator=g) * 0.4)
            sd[k] = torch.randn(v.shape, generator=g) * rows * 0.02
    sd["extra.count"] = torch.arange(5)
    sd["extra.half"] = torch.randn(3, 4, generator=g).to(torch.bfloat16)
    return sd


@pytest.fixture(scope="module")
def qmodel():
    return quantize_state_dict(tiny_state(), SPEC)


@pytest.fixture(scope="module")
def blob(qmodel):
    return encode_artifact(qmodel, CONFIG, codec="ans",
                           tokenizer={"sha256": "ab" * 32, "vocab_size": 64})[0]


@pytest.fixture(scope="module")
def fuzz_blob():
    """A small artifact for fuzzing: one layer, two ans streams, every entry kind."""
    qm = quantize_state_dict(tiny_state(layers=1), "@control=fp32;*.mlp.*=int5:amax;*=fp16")
    data = encode_artifact(qm, CONFIG, codec="ans",
                           tokenizer={"sha256": "cd" * 32, "vocab_size": 64})[0]
    assert sum(s.codec == "ans" for s in parse_artifact(data).streams) == 2
    return data


@pytest.mark.parametrize("codec", ["auto", "ans", "zstd", "zlib", "lzma", "brotli"])
def test_round_trip_is_exact(qmodel, codec):
    data, report = encode_artifact(qmodel, CONFIG, codec=codec)
    art = parse_artifact(data)
    want = qmodel.state_dict()
    got = art.state_dict()
    assert list(got) == list(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    assert got["extra.count"].dtype == torch.int64
    assert art.config == CONFIG
    assert report["model_bytes"] == len(data)
    assert report["header_bytes"] + sum(t["bytes"] for t in report["tensors"]) == len(data)
    assert sum(s["bytes"] for s in report["streams"]) + report["header_bytes"] == len(data)
    back = art.quantized_model()
    for e in qmodel.entries:
        for role, part in e.parts.items():
            assert np.array_equal(np.asarray(back[e.name].parts[role].data).ravel(),
                                  np.asarray(part.data).ravel())


def test_reconstruction_matches_dequantize_bit_for_bit(qmodel):
    from golfpack.quant.rows import dequantize

    for e in qmodel.entries:
        if e.kind == "quant":
            want = dequantize(torch.from_numpy(e.parts["codes"].data),
                              torch.from_numpy(e.parts["scales"].data)).reshape(e.shape)
            got = qmodel.state_dict()[e.name]
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), e.name
    empty = quantize_state_dict({"w": torch.zeros(0, 4), "v": torch.zeros(3, 0)},
                                "@control=fp32;*=int6")
    assert [e.kind for e in empty.entries] == ["quant", "quant"]
    assert empty.state_dict()["w"].shape == (0, 4)
    data, _ = encode_artifact(empty, {})
    assert parse_artifact(data).state_dict()["v"].shape == (3, 0)


def test_header_fields_and_report_from_file_alone(blob, qmodel, tmp_path):
    path = tmp_path / "m.golf"
    path.write_bytes(blob)
    art = load_artifact(path)
    assert art.tokenizer_sha256 == "ab" * 32 and art.vocab_size == 64
    rep = art.report()
    assert rep["model_bytes"] == path.stat().st_size
    assert rep["header_bytes"] + sum(t["bytes"] for t in rep["tensors"]) == rep["model_bytes"]
    by_name = {t["name"]: t for t in rep["tensors"]}
    assert by_name["tok_emb.weight"]["scheme"] == "int8:gptq-lite"
    assert by_name["blocks.0.mlp.fc.weight"]["scheme"] == "int5:amax"
    assert by_name["blocks.0.attn_scale"]["scheme"] == "fp32"
    assert all(s["codec"] in ("ans", "brotli", "zstd", "lzma", "zlib", "store")
               for s in rep["streams"])
    assert any(s["codec"] == "ans" for s in rep["streams"])


def test_unpack_then_requantize_reproduces_the_codes(qmodel, blob):
    again = quantize_state_dict(parse_artifact(blob).state_dict(), SPEC)
    for e in qmodel.entries:
        f = again[e.name]
        assert f.kind == e.kind and f.scheme == e.scheme
        for role, part in e.parts.items():
            assert np.array_equal(f.parts[role].data, part.data), (e.name, role)


def test_unknown_entry_kind_is_readable_but_not_rebuildable(qmodel):
    extra = Entry("blocks.0.lowrank", (8, 4), "float32", "lowrank-v9", "int4:amax",
                  {"a_codes": Part(np.ones((8, 2), np.int8), "codes", 4, group="lr"),
                   "a_scales": Part(np.ones(8, np.float16), group="lr")}, meta={"rank": 2})
    data, rep = encode_artifact(QuantizedModel(qmodel.entries + [extra]), CONFIG)
    art = parse_artifact(data)
    assert rep["tensors"][-1]["kind"] == "lowrank-v9"
    assert art.entries[-1].meta["rank"] == 2
    back = art.quantized_model()["blocks.0.lowrank"]
    assert back.parts["a_codes"].data.shape == (8, 2)
    with pytest.raises(ArtifactError, match="lowrank-v9"):
        art.state_dict()


def test_basic_rejections(blob, tmp_path):
    with pytest.raises(ArtifactError, match="bad magic"):
        parse_artifact(b"X" * 64)
    with pytest.raises(ArtifactError, match="too short"):
        parse_artifact(MAGIC)
    future = bytearray(blob)
    future[8] = 9
    with pytest.raises(ArtifactError, match="version 9 is not supported"):
        parse_artifact(bytes(future))
    with pytest.raises(ArtifactError, match="truncated or padded"):
        parse_artifact(blob + b"\x00")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path / "missing.golf")


def _load_fully(data: bytes):
    art = parse_artifact(data)
    art.state_dict()
    art.report()


def test_fuzz_flips_and_truncations_give_artifact_error(fuzz_blob):
    blob = fuzz_blob
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(2000):
        b = bytearray(blob)
        pos = int(rng.integers(0, len(b)))
        b[pos] ^= int(rng.integers(1, 256))
        cases.append(bytes(b))
    step = max(1, len(blob) // 1000)
    cases += [blob[:n] for n in range(0, len(blob), step)]
    for data in cases:
        t0 = time.perf_counter()
        with pytest.raises(ArtifactError) as info:
            _load_fully(data)
        assert "\n" not in str(info.value)
        assert time.perf_counter() - t0 < 2.0


def _check_resealed(data: bytes, limit_bytes: int, trace: bool = True):
    """Valid checksums, hostile content: an ArtifactError or a clean load; never another
    exception, a hang, or an allocation beyond what the file declares (traced when asked:
    tracemalloc sees numpy's buffers too)."""
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    try:
        _load_fully(data)
    except ArtifactError as exc:
        assert "\n" not in str(exc)
    finally:
        if trace:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    assert time.perf_counter() - t0 < 5.0
    if trace:
        assert peak < limit_bytes, peak


def test_fuzz_resealed_header_mutations(fuzz_blob):
    body, payloads = split(fuzz_blob)
    assert reseal(body, payloads) != fuzz_blob  # stored vs compressed header, same content
    _load_fully(reseal(body, payloads))
    rng = np.random.default_rng(1)
    limit = 48 * 1024 * 1024
    for i in range(120):
        b = bytearray(body)
        for _ in range(int(rng.integers(1, 3))):
            pos = int(rng.integers(0, len(b)))
            b[pos] = int(rng.integers(0, 256)) if i % 2 else b[pos] ^ (1 << int(rng.integers(8)))
        _check_resealed(reseal(bytes(b), payloads), limit, trace=i % 4 == 0)
    for cut in range(0, len(body), max(1, len(body) // 25)):
        _check_resealed(reseal(body[:cut], payloads), limit, trace=cut % 3 == 0)


def test_fuzz_resealed_payload_mutations(fuzz_blob):
    """Flip bytes inside ans payloads and fix the stream digest: the decoder itself must
    notice (or decode in-range codes) without crashing."""
    art = parse_artifact(fuzz_blob)
    body, payloads = split(fuzz_blob)
    base = art.streams[0].offset
    rng = np.random.default_rng(2)
    ans = [s for s in art.streams if s.codec == "ans"]
    assert ans
    for _ in range(120):
        k = int(rng.integers(0, len(ans)))
        s = ans[k]
        p = bytearray(payloads)
        pos = s.offset - base + int(rng.integers(0, s.stored_len))
        p[pos] ^= int(rng.integers(1, 256))
        new_sum = artifact.digest(bytes(p[s.offset - base:s.offset - base + s.stored_len]))
        assert body.count(s.checksum) == 1
        mutated = parse_artifact(reseal(body.replace(s.checksum, new_sum), bytes(p)))
        t0 = time.perf_counter()
        try:
            content = mutated.stream_content(art.streams.index(s))
            assert len(content) == s.raw_len
        except ArtifactError as exc:
            assert "\n" not in str(exc)
        assert time.perf_counter() - t0 < 2.0
