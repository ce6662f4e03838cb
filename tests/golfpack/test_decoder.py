"""The standalone decoder (`golfpack decoder`): bit-identical to golfpack's reader on every
codec, transform and entry kind, in an interpreter where golf is not importable, and just as
strict on corrupted and hostile files (the fuzz corpus of test_pack_artifact)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from artifactbytes import reseal, split

from golfpack import decoder as gd
from golfpack.artifact import encode_artifact, parse_artifact
from golfpack.errors import ArtifactError
from golfpack.format import codecs
from golfpack.quant.qmodel import QuantizedModel, quantize_state_dict

CONFIG = {"vocab_size": 64, "num_layers": 1, "model_dim": 32}
SPEC6 = "@control=fp32;*=int6"


def decoder_module(features=None) -> types.ModuleType:
    """The generated decoder, executed as a module of its own (no golfpack in it)."""
    mod = types.ModuleType("golf_decode")
    exec(compile(gd.decoder_source(features), "golf_decode.py", "exec"), mod.__dict__)
    return mod


FULL = decoder_module()


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.exp(torch.randn(96, 1, generator=g) * 1.2)
    return {
        "emb.weight": torch.randn(64, 32, generator=g) * 0.02,
        "blk.0.fc.weight": torch.randn(96, 64, generator=g) * rows * 0.02,
        "blk.0.proj.weight": torch.randn(32, 96, generator=g) * 0.02,
        "blk.0.scale": torch.rand(32, generator=g),
        "blk.0.gain": torch.randn(8, generator=g).to(torch.bfloat16),
        "blk.0.big": torch.full((3,), 1e5),  # fp16 would overflow: stored fp32
        "count": torch.arange(5),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(0.5),
    }


def _lqer_entry():
    from golfpack.hessian.lqer import lqer_entry
    from golfpack.quant.lowrank import LowRank
    from golfpack.quant.qmodel import quant_entry
    from golfpack.quant.rows import parse_scheme

    g = torch.Generator().manual_seed(3)
    base = quant_entry("blk.0.lq.weight", torch.randn(48, 80, generator=g) * 0.02,
                       parse_scheme("int4:amax"))
    lr = LowRank(torch.randint(-1, 2, (48, 3), generator=g).to(torch.int8),
                 torch.tensor([0.01], dtype=torch.float16),
                 torch.randint(-7, 8, (3, 80), generator=g).to(torch.int8),
                 (torch.rand(3, 2, generator=g) * 0.01).to(torch.float16))
    return lqer_entry(base, lr)


def _banked_state():
    """Banks as the records write them ([L, rows, cols], fp32 and bf16), a bf16 matrix
    quantized, and one bank slice given its own rule (split_banks names it `qo_bank[1]`)."""
    g = torch.Generator().manual_seed(7)
    return {"tok_emb.weight": (torch.randn(64, 32, generator=g) * 0.02).to(torch.bfloat16),
            "qo_bank": torch.randn(4, 32, 32, generator=g) * 0.02,
            "mlp_up_bank": (torch.randn(2, 64, 32, generator=g) * 0.02).to(torch.bfloat16),
            "norm.weight": torch.rand(32, generator=g)}


BANK_SPEC = "@control=fp32;qo_bank[1]=int8;qo_bank[3]=fp16;*=int6:amax"


def models():
    """name -> QuantizedModel covering int2..int8, fp16/fp32/raw passthrough, LQER, banks."""
    out = {}
    for bits in range(2, 9):
        out[f"int{bits}"] = quantize_state_dict(
            _state(bits), f"@control=fp32;*.scale=fp16;count=raw;*=int{bits}:amax")
    mixed = quantize_state_dict(_state(), "@control=fp32;@small(100)=fp16;emb*=int8;*=int5")
    out["mixed+lqer"] = QuantizedModel(mixed.entries + [_lqer_entry()])
    out["banked"] = quantize_state_dict(_banked_state(), BANK_SPEC)
    return out


MODELS = models()


def _check(data: bytes, mod=FULL):
    want = parse_artifact(data).state_dict(original_dtypes=True)  # what `unpack` writes
    got, cfg = mod.parse(data)
    assert cfg == parse_artifact(data).config
    assert list(got) == list(want)
    for k, t in want.items():
        assert got[k].dtype == t.dtype and got[k].shape == t.shape, k
        assert digest(got[k]) == digest(t), k


def digest(t: torch.Tensor) -> str:
    """dtype, shape and the exact bytes of a tensor."""
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return f"{t.dtype}:{list(t.shape)}:{hashlib.sha256(raw).hexdigest()[:16]}"


@pytest.mark.parametrize("codec", ["auto", "ans", "zstd", "zlib", "lzma", "brotli"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_decoder_equals_golfpack_reader(codec, model):
    data, _ = encode_artifact(MODELS[model], CONFIG, codec=codec)
    _check(data)
    art = parse_artifact(data)
    _check(data, decoder_module(gd.features_of(art)))  # pruned for this artifact


def _forced(monkeypatch, transform):
    """Make every stream use `transform` (bit packing for codes, byte shuffle for bytes)."""
    def only(kind, choice, width, bits):
        if kind == "codes":
            return [(choice, "bitpack" if transform == "bitpack" else "none",
                     bits if transform == "bitpack" else 0)]
        return [(choice, "shuffle", width) if width > 1 and transform == "shuffle"
                else (choice, "none", 0)]
    monkeypatch.setattr(codecs, "candidates", only)


@pytest.mark.parametrize("transform", ["bitpack", "shuffle"])
@pytest.mark.parametrize("codec", ["zstd", "zlib", "lzma", "brotli"])
def test_transforms(monkeypatch, transform, codec):
    _forced(monkeypatch, transform)
    for model in ("int2", "int5", "int8", "mixed+lqer"):
        data, _ = encode_artifact(MODELS[model], CONFIG, codec=codec)
        art = parse_artifact(data)
        assert transform in {s.transform for s in art.streams}
        _check(data)
        _check(data, decoder_module(gd.features_of(art)))


def _ans_classes(data: bytes) -> list[tuple[int, int]]:
    """(K, C) of every ans stream."""
    from golfpack.ans.codec import parse

    art = parse_artifact(data)
    out = []
    for s in art.streams:
        if s.codec == "ans":
            p = parse(art._payload(s), s.raw_len)
            out.append((p.freqs.shape[0] // p.C, p.C))
    return out


def test_ans_with_context_classes():
    sd = {"w": torch.randn(256, 512, generator=torch.Generator().manual_seed(5))
          * torch.exp(torch.linspace(-2, 2, 256))[:, None]
          * torch.exp(torch.linspace(-1, 1, 512))[None, :]}
    data, _ = encode_artifact(quantize_state_dict(sd, "*=int6"), {}, codec="ans")
    assert any(k > 1 for k, _ in _ans_classes(data)) and any(c > 1 for _, c in _ans_classes(data))
    _check(data)


def test_pruned_decoder_refuses_what_it_lacks():
    data, _ = encode_artifact(MODELS["int6"], CONFIG, codec="zstd")
    mod = decoder_module({"zlib", "brotli", "quant", "float", "raw"})
    with pytest.raises(mod.GolfDecodeError, match="codec 2"):
        mod.parse(data)
    assert len(gd.decoder_source({"zstd"})) < len(gd.decoder_source())


@pytest.mark.parametrize("codec", ["ans", "zstd"])
def test_banks_come_back_as_golfpack_unpack_writes_them(tmp_path, codec):
    from golfpack.checkpoint import load
    from golfpack.compress import unpack_artifact

    sd = _banked_state()
    data, _ = encode_artifact(quantize_state_dict(sd, BANK_SPEC), CONFIG, codec=codec)
    art = parse_artifact(data)
    assert "bank" in gd.features_of(art) and "qo_bank[3]" in [e.name for e in art.entries]
    (tmp_path / "m.golf").write_bytes(data)
    unpack_artifact(tmp_path / "m.golf", tmp_path / "u.safetensors")
    unpacked, _ = load(tmp_path / "u.safetensors")
    for mod in (FULL, decoder_module(gd.features_of(art))):
        got, _ = mod.load(str(tmp_path / "m.golf"))
        assert list(got) == list(sd) and set(unpacked) == set(sd)
        for k, t in sd.items():
            assert got[k].dtype == t.dtype and got[k].shape == t.shape, k
            assert digest(got[k]) == digest(unpacked[k]), k
    _check(data)


def test_bad_banks_are_refused_by_both_readers():
    """A file whose slices are not 0..L-1, or name a bank that is also a tensor, or differ
    in shape: golfpack's reader and the decoder both refuse it in one line."""
    from golfpack.quant.qmodel import quant_entry
    from golfpack.quant.rows import parse_scheme

    g = torch.Generator().manual_seed(8)

    def art(shapes):
        es = [quant_entry(n, torch.randn(*sh, generator=g), parse_scheme("int6"))
              for n, sh in shapes.items()]
        return encode_artifact(QuantizedModel(es), CONFIG, codec="zstd")[0]

    assert _agree(art({"b[0]": (4, 8), "b[1]": (4, 8)})) == "ok"
    for bad in ({"b[0]": (4, 8), "b[2]": (4, 8)}, {"b[0]": (4, 8), "b[1]": (4, 9)},
                {"b": (4, 8), "b[0]": (4, 8)}, {"b[1]": (4, 8), "b[01]": (4, 8)}):
        assert _agree(art(bad)) == "refused", bad


# ----------------------------------------------------------------------------- isolation
BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('golfpack', 'golfeval', 'trainer'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, _Block())
"""


def isolated(tmp: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `code` with `python -I -S`: no site (so no editable finder for golf), no
    PYTHONPATH, cwd elsewhere; sys.path = the temp dir + stdlib + the third-party
    site-packages (numpy, torch, codec libraries); golf imports are blocked as well."""
    site = sysconfig.get_paths()["purelib"]
    prog = (f"import sys\nsys.path[:0] = [{str(tmp)!r}]\nsys.path.append({site!r})\n"
            + BLOCKER + code)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([sys.executable, "-I", "-S", "-c", prog], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


CHILD = """
import hashlib, json, sys
import torch
for m in ('golfpack', 'golfeval', 'trainer'):
    try:
        __import__(m)
    except ImportError:
        pass
    else:
        raise SystemExit(m + ' is importable')
from golf_decode import load, GolfDecodeError

def dig(t):
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b''
    return f'{t.dtype}:{list(t.shape)}:{hashlib.sha256(raw).hexdigest()[:16]}'

out = {}
for path in json.load(open('paths.json')):
    try:
        sd, cfg = load(path)
    except GolfDecodeError as e:
        out[path] = 'error: ' + str(e)
        continue
    out[path] = {k: dig(v) for k, v in sd.items()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_decoder_in_an_interpreter_without_golf(tmp_path):
    dec = tmp_path / "dec"
    dec.mkdir()
    (dec / "golf_decode.py").write_bytes(gd.decoder_file(None, "minified"))
    arts, want = [], {}
    for model in sorted(MODELS):
        for codec in ("ans", "zstd", "lzma", "brotli", "zlib"):
            data, _ = encode_artifact(MODELS[model], CONFIG, codec=codec)
            p = tmp_path / f"{model}-{codec}.golf"
            p.write_bytes(data)
            arts.append(str(p))
            want[str(p)] = {k: digest(v) for k, v in
                            parse_artifact(data).state_dict(original_dtypes=True).items()}
    good = Path(arts[0]).read_bytes()
    bad = {"trunc.golf": good[:len(good) // 2], "flip.golf": good[:40] + bytes([good[40] ^ 1])
           + good[41:], "junk.golf": b"not an artifact at all"}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    (dec / "paths.json").write_text(json.dumps(arts + [str(tmp_path / n) for n in bad]))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    res = isolated(dec, "import os; os.chdir(sys.path[0])\n" + CHILD, elsewhere)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    for p in arts:
        assert got[p] == want[p], p
    for n in bad:
        msg = got[str(tmp_path / n)]
        assert msg.startswith("error: ") and "\n" not in msg, msg


# ----------------------------------------------------------------------------- fuzz corpus
def _agree(data: bytes) -> str:
    """golfpack's reader and the decoder agree: both refuse (one line each), or both load
    the same tensors. -> "ok" or "refused"."""
    try:
        want = parse_artifact(data).state_dict(original_dtypes=True)
    except ArtifactError:
        with pytest.raises(FULL.GolfDecodeError) as info:
            FULL.parse(data)
        assert "\n" not in str(info.value)
        return "refused"
    got, _ = FULL.parse(data)
    assert list(got) == list(want)
    assert all(digest(got[k]) == digest(want[k]) for k in want)
    return "ok"


@pytest.fixture(scope="module")
def fuzz_blob():
    """Two ans streams (one with row classes), every entry kind, LQER."""
    qm = quantize_state_dict(_state(1), "@control=fp32;blk.*.fc*=int5:amax;count=raw;*=fp16")
    data = encode_artifact(QuantizedModel(qm.entries + [_lqer_entry()]), CONFIG, codec="ans",
                           tokenizer={"sha256": "cd" * 32, "vocab_size": 64})[0]
    assert sum(s.codec == "ans" for s in parse_artifact(data).streams) >= 2
    return data


def test_ans_stream_with_a_transform_is_refused_by_both_readers(fuzz_blob):
    """FORMAT.md: an ans stream's transform must be 0. A resealed file whose ans stream says
    "shuffle" (found by a longer fuzz run: golfpack's batched decode used to ignore the
    transform of ans streams while the decoder refused it) is refused by both, one line."""
    body, payloads = split(fuzz_blob)
    art = parse_artifact(fuzz_blob)
    for s in (s for s in art.streams if s.codec == "ans"):
        name = s.name.encode()
        i = body.index(bytes([len(name)]) + name) + 1 + len(name)  # codec, transform, param
        assert body[i] == 5
        for transform, param in ((1, 0), (1, 2), (2, 4)):
            bad = reseal(body[:i + 1] + bytes([transform, param]) + body[i + 3:], payloads)
            with pytest.raises(ArtifactError, match="ans streams take no transform"):
                parse_artifact(bad)
            assert _agree(bad) == "refused"


def test_fuzz_flips_and_truncations_agree(fuzz_blob):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        b = bytearray(fuzz_blob)
        b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
        seen.add(_agree(bytes(b)))
    for n in range(0, len(fuzz_blob), max(1, len(fuzz_blob) // 150)):
        seen.add(_agree(fuzz_blob[:n]))
    assert seen == {"refused"}


@pytest.mark.slow
def test_fuzz_resealed_header_mutations_agree(fuzz_blob):
    body, payloads = split(fuzz_blob)
    assert _agree(reseal(body, payloads)) == "ok"
    rng = np.random.default_rng(1)
    seen = []
    for i in range(400):
        b = bytearray(body)
        for _ in range(int(rng.integers(1, 3))):
            pos = int(rng.integers(0, len(b)))
            b[pos] = int(rng.integers(0, 256)) if i % 2 else b[pos] ^ (1 << int(rng.integers(8)))
        seen.append(_agree(reseal(bytes(b), payloads)))
    for cut in range(0, len(body), max(1, len(body) // 40)):
        seen.append(_agree(reseal(body[:cut], payloads)))
    assert "ok" in seen and "refused" in seen


@pytest.mark.slow
def test_fuzz_resealed_headers_of_general_codecs_and_banks_agree(monkeypatch):
    """The same header fuzz on artifacts the ans blob does not cover: bit packing and byte
    shuffles under each general codec, and banks (a longer run: 3,000 such files agreed)."""
    blobs = []
    for transform, codec in (("bitpack", "zstd"), ("shuffle", "lzma"), ("bitpack", "brotli")):
        _forced(monkeypatch, transform)
        blobs.append(encode_artifact(MODELS["mixed+lqer"], CONFIG, codec=codec)[0])
        monkeypatch.undo()
    blobs.append(encode_artifact(MODELS["banked"], CONFIG, codec="zlib")[0])
    rng = np.random.default_rng(3)
    seen = []
    for blob in blobs:
        body, payloads = split(blob)
        for i in range(40):
            b = bytearray(body)
            pos = int(rng.integers(0, len(b)))
            b[pos] = int(rng.integers(0, 256)) if i % 2 else b[pos] ^ (1 << int(rng.integers(8)))
            seen.append(_agree(reseal(bytes(b), payloads)))
    assert "ok" in seen and "refused" in seen


@pytest.mark.slow
def test_fuzz_resealed_payload_mutations_agree(fuzz_blob):
    from golfpack.format.layout import digest as dg

    art = parse_artifact(fuzz_blob)
    body, payloads = split(fuzz_blob)
    base = art.streams[0].offset
    rng = np.random.default_rng(2)
    seen = []
    for _ in range(120):
        s = art.streams[int(rng.integers(0, len(art.streams)))]
        if not s.stored_len:
            continue
        p = bytearray(payloads)
        p[s.offset - base + int(rng.integers(0, s.stored_len))] ^= int(rng.integers(1, 256))
        new = dg(bytes(p[s.offset - base:s.offset - base + s.stored_len]))
        seen.append(_agree(reseal(body.replace(s.checksum, new), bytes(p))))
    assert "refused" in seen


@pytest.mark.parametrize("mode", ["raw", "minified"])
def test_codec_auto_is_net_of_decoder_cost(mode):
    """A codec (here ans, on a small model) whose decoder costs more than it saves is not
    chosen; every codec kept pays for its decoder; the total never grows."""
    from golfpack.compress import compress_state_dict

    g = torch.Generator().manual_seed(0)
    sd = {f"b.{i}.w": torch.randn(64, 128, generator=g)
          * torch.exp(torch.randn(64, 1, generator=g)) for i in range(3)}
    gross, _ = encode_artifact(quantize_state_dict(sd, SPEC6), {}, codec="auto")
    gross_feats = gd.features_of(parse_artifact(gross))
    assert "ans" in gross_feats  # by itself ans is the smallest here...
    data, rep = compress_state_dict(sd, {}, scheme_spec=SPEC6, code_mode=mode)
    net = rep["codec_savings"]
    assert net["ans"]["kept"] is False and net["ans"]["net"] < 0  # ...but not net of its code
    assert all(v["net"] is None or v["net"] >= 0 for v in net.values() if v["kept"])
    assert rep["total_bytes"] <= len(gross) + gd.decoder_bytes(gross_feats, mode)
    assert rep["decoder_bytes"] == gd.decoder_bytes(gd.features_of(parse_artifact(data)), mode)


def _twin_rows_artifact() -> bytes:
    """An int6 embedding whose second half are near-twins of its first rows: its ans stream
    carries row references (flags bit 1)."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(128, 48, generator=g)
    w[64:] = w[torch.arange(64) % 8] + 0.02 * torch.randn(64, 48, generator=g)
    data, _ = encode_artifact(quantize_state_dict({"emb.weight": w}, SPEC6), CONFIG,
                              codec="ans")
    return data


def test_ans_row_references_agree():
    from golfpack.ans.codec import parse

    data = _twin_rows_artifact()
    art = parse_artifact(data)
    s = next(s for s in art.streams if s.codec == "ans")
    assert len(parse(art._payload(s), s.raw_len).refs) >= 32
    _check(data)
    _check(data, decoder_module(gd.features_of(art)))


def _varints_end(b: bytes, at: int, count: int) -> int:
    """Where `count` LEB128 varints starting at `at` end."""
    for _ in range(count):
        while b[at] & 0x80:
            at += 1
        at += 1
    return at


def test_ans_hostile_row_references_agree():
    """Each byte of the reference count and of the first (gap, back) pairs replaced (and
    the stream resealed): golfpack's reader and the decoder refuse alike, or decode alike."""
    from golfpack.format.layout import digest as dg

    data = _twin_rows_artifact()
    art = parse_artifact(data)
    body, payloads = split(data)
    s = next(s for s in art.streams if s.codec == "ans")
    base = s.offset - art.streams[0].offset
    payload = bytes(payloads[base:base + s.stored_len])
    start = _varints_end(payload, 5, 2 * payload[4])  # after the header and the one segment
    assert payload[4] == 1 and payload[3] & 2  # (one segment, one-byte count; references)
    seen = set()
    for pos in range(start, start + 17):  # the count and the first eight pairs
        for v in (0, 1, 64, 127, 200):
            p = bytearray(payloads)
            p[base + pos] = v
            new = dg(bytes(p[base:base + s.stored_len]))
            seen.add(_agree(reseal(body.replace(s.checksum, new), bytes(p))))
    assert "refused" in seen


def test_wrapper_needs_brotli_only_when_the_decoder_does():
    """The self-extracting decoder: lzma (standard library) unless brotli is one of its
    features anyway; its features are read back from it without running it."""
    small = gd.decoder_file({"zstd", "quant"}, "minified")
    assert small.startswith(b"#coding:l1\nimport lzma;")
    assert gd.decoder_features(small) == {"zstd", "quant"}
    full = gd.decoder_file(None, "minified")
    assert gd.decoder_features(full) == set(gd.FEATURES)
    assert len(full) < len(gd.decoder_file(None, "raw")) // 3
