"""The challenge's own artifacts (`.ptz`): a torch.save of quantized tensors, compressed.

Two layouts are known, both read without unpickling code (golfpack.foreign.safeload):
  baseline  {"__quant_format__": "int8_clean_per_row_v1", "quantized", "scales", "dtypes",
            "passthrough", ["qmeta"], ["passthrough_orig_dtypes"]}, then zlib
  records   {"w": {name: fp16 tensor | name.q: int8 codes, name.scale: fp16 per-row scale},
            "m": {name: "passthrough (float16)" | "gptq (int6)" ...}}, optionally
            byte-shuffled ("BSHF" + stride), then lzma / brotli / zstd
The outer compression is found by its magic bytes (brotli, which has none, by probing).
Decompression is bounded (`max_raw` bytes out), so a small file cannot make us allocate
gigabytes. Variants nobody here can decode (lrzip per-group files) get a one-line error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from golfpack.errors import CheckpointError, read_file
from golfpack.foreign.safeload import safe_torch_load

MAX_RAW = 1 << 31  # decompressed bytes we accept (a 16 MB artifact is ~10x smaller)
BSHF_MAGIC = b"BSHF"
BASELINE_FORMAT = "int8_clean_per_row_v1"
_BITS_RE = re.compile(r"int(\d+)")


@dataclass
class ForeignWeights:
    """Dequantized weights of a foreign file, and what was found out about it."""

    state_dict: dict[str, torch.Tensor]
    layout: str                # "baseline-int8", "records", "state-dict"
    compression: str           # "zlib", "lzma", "brotli", "zstd", "none"
    shuffled: bool = False
    quantized: dict[str, str] = field(default_factory=dict)  # name -> "int8" ...
    notes: list[str] = field(default_factory=list)


def detect(raw: bytes) -> str:
    """The outer compression of a blob, from its first bytes."""
    if raw[:4] == b"PK\x03\x04":
        return "none"
    if raw[:4] == b"LRZI":
        return "lrzip"
    if raw[:6] == b"\xfd7zXZ\x00" or raw[:3] == b"\x5d\x00\x00":
        return "lzma"
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0:
        return "zlib"
    return "brotli?"  # brotli has no magic: probe it


def _bounded(name: str, raw: bytes, max_raw: int) -> bytes:
    import lzma
    import zlib

    if name == "zlib":
        d = zlib.decompressobj()
        out = d.decompress(raw, max_raw)
        if d.unconsumed_tail or not d.eof:
            raise CheckpointError(f"truncated, or decompresses to more than {max_raw:,} bytes")
        return out
    if name == "lzma":
        d = lzma.LZMADecompressor()
        out = d.decompress(raw, max_raw)
        if not d.eof:
            raise CheckpointError(f"truncated, or decompresses to more than {max_raw:,} bytes")
        return out
    if name == "zstd":
        import zstandard

        d = zstandard.ZstdDecompressor().decompressobj()
        out = d.decompress(raw)
        if len(out) > max_raw:
            raise CheckpointError(f"decompresses to more than {max_raw:,} bytes")
        return out
    if name == "brotli":
        import brotli

        d = brotli.Decompressor()
        out, step = bytearray(), 1 << 20
        for i in range(0, len(raw), step):
            out += d.process(raw[i:i + step])
            if len(out) > max_raw:
                raise CheckpointError(f"decompresses to more than {max_raw:,} bytes")
        if not d.is_finished():
            raise CheckpointError("truncated brotli stream")
        return bytes(out)
    raise CheckpointError(f"unknown compression {name}")


def looks_like_ptz(path) -> bool:
    """True when the file starts like a .ptz (a known magic, or a brotli stream holding a
    torch.save / byte-shuffled payload): the cheap test that routes a file to load_ptz."""
    with open(os.fspath(path), "rb") as fh:
        head = fh.read(1 << 16)
    kind = detect(head)
    if kind != "brotli?":
        return True
    try:
        import brotli

        out = brotli.Decompressor().process(head)
    except Exception:
        return False
    return out[:4] in (b"PK\x03\x04", BSHF_MAGIC)


def decompress(raw: bytes, max_raw: int = MAX_RAW) -> tuple[bytes, str, bool]:
    """raw -> (torch.save bytes, compression name, whether it was byte-shuffled)."""
    kind = detect(raw)
    if kind == "lrzip":
        raise CheckpointError("lrzip-compressed (per-group) .ptz files are not supported: "
                              "no lrzip decoder here; decompress it with `lrzip -d` first")
    if kind == "none":
        out = raw
    elif kind == "brotli?":
        try:
            out = _bounded("brotli", raw, max_raw)
        except CheckpointError:
            raise
        except Exception:
            raise CheckpointError("not a .ptz artifact: no zip, zlib, lzma, zstd or brotli "
                                  "stream at the start") from None
        kind = "brotli"
    else:
        try:
            out = _bounded(kind, raw, max_raw)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"corrupt {kind} stream ({str(exc)[:100]})") from None
    shuffled = out[:4] == BSHF_MAGIC
    if shuffled:
        out = unshuffle(out)
    if out[:4] != b"PK\x03\x04":
        raise CheckpointError(f"the {kind} stream does not hold a torch.save file")
    return out, kind, shuffled


def unshuffle(data: bytes) -> bytes:
    """Undo the records' byte shuffle: "BSHF", a stride byte, then byte planes in order."""
    if len(data) < 5:
        raise CheckpointError("truncated byte-shuffled stream")
    stride = data[4]
    payload = np.frombuffer(data, dtype=np.uint8, offset=5)
    if stride < 2:
        return payload.tobytes()
    n = payload.size
    out = np.empty(n, dtype=np.uint8)
    pos = 0
    for k in range(stride):
        cnt = n // stride + (1 if k < n % stride else 0)
        out[k::stride] = payload[pos:pos + cnt]
        pos += cnt
    return out.tobytes()


def load_ptz(path, max_raw: int = MAX_RAW) -> ForeignWeights:
    """A baseline or record .ptz (or a plain torch.save state dict) -> dequantized weights."""
    path = os.fspath(path)
    raw = read_file(path, "artifact", CheckpointError)
    try:
        blob, kind, shuffled = decompress(raw, max_raw)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    obj = safe_torch_load(blob, path)
    if isinstance(obj, dict) and obj.get("__quant_format__") is not None:
        fw = _baseline(obj, path)
    elif isinstance(obj, dict) and set(obj) == {"w", "m"}:
        fw = _records(obj, path)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        fw = ForeignWeights({k: v for k, v in obj.items()}, "state-dict", kind)
    else:
        keys = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: unknown .ptz layout (top-level keys {keys})")
    fw.compression, fw.shuffled = kind, shuffled
    return fw


def _need(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise CheckpointError(f"{path}: {msg}")


def _baseline(obj: dict, path: str) -> ForeignWeights:
    fmt = obj["__quant_format__"]
    _need(fmt == BASELINE_FORMAT, path, f"quant format {fmt!r} is unknown (this golf reads "
          f"{BASELINE_FORMAT!r})")
    for key in ("quantized", "scales", "dtypes", "passthrough"):
        _need(isinstance(obj.get(key), dict), path, f"baseline int8 file lacks {key!r}")
    qmeta = obj.get("qmeta") or {}
    orig = obj.get("passthrough_orig_dtypes") or {}
    out, quant = {}, {}
    for name, q in obj["quantized"].items():
        s = obj["scales"].get(name)
        _need(isinstance(q, torch.Tensor) and q.dtype == torch.int8, path,
              f"{name}: codes are not int8")
        _need(isinstance(s, torch.Tensor), path, f"{name}: no scale")
        dtype = _dtype(obj["dtypes"].get(name), path, name)
        per_row = (qmeta.get(name) or {}).get("scheme") == "per_row" or s.ndim > 0
        if per_row:
            _need(s.numel() == q.shape[0], path, f"{name}: {s.numel()} scales for "
                  f"{q.shape[0]} rows")
            sf = s.to(torch.float32).view(q.shape[0], *([1] * (q.ndim - 1)))
            out[name] = (q.float() * sf).to(dtype).contiguous()
        else:
            out[name] = (q.float() * float(s.reshape(-1)[0])).to(dtype).contiguous()
        quant[name] = "int8"
    for name, t in obj["passthrough"].items():
        _need(isinstance(t, torch.Tensor), path, f"{name}: passthrough is not a tensor")
        o = orig.get(name)
        out[name] = t.to(_dtype(o, path, name)).contiguous() if isinstance(o, str) else t
    return ForeignWeights(out, "baseline-int8", "zlib", quantized=quant)


def _records(obj: dict, path: str) -> ForeignWeights:
    w, m = obj["w"], obj["m"]
    _need(isinstance(w, dict) and isinstance(m, dict), path, "'w' and 'm' must be dicts")
    out, quant = {}, {}
    for name, info in m.items():
        _need(isinstance(info, str), path, f"{name}: metadata is not a string")
        if "passthrough" in info:
            t = w.get(name)
            _need(isinstance(t, torch.Tensor), path, f"{name}: passthrough tensor missing")
            out[name] = t.float() if t.dtype == torch.float16 else t
            continue
        q, s = w.get(name + ".q"), w.get(name + ".scale")
        _need(isinstance(q, torch.Tensor) and isinstance(s, torch.Tensor), path,
              f"{name}: {info} needs {name}.q and {name}.scale")
        if s.ndim > 0:
            _need(s.numel() == q.shape[0], path, f"{name}: {s.numel()} scales for "
                  f"{q.shape[0]} rows")
            out[name] = q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))
        else:
            out[name] = q.float() * float(s)
        b = _BITS_RE.search(info)
        quant[name] = f"int{b.group(1)}" if b else info
    return ForeignWeights(out, "records", "?", quantized=quant)


def _dtype(name, path: str, tensor: str) -> torch.dtype:
    ok = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
    _need(name in ok, path, f"{tensor}: dtype {name!r} is not a float dtype")
    return ok[name]
