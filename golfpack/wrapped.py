"""Self-extracting wrappers, read without running them.

A wrapped script carries its real code packed in one literal, `exec(codec.decompress(
literal))`: record scripts ship that way, and so does a minified golf bundle. Counting a
record's code bytes (golfeval review) and finding the golf decoder inside a code file
(golfpack.decoder) both need what is inside; this is their one reader.

Recognised: `<codec>.decompress(<literal>)`, codec lzma, brotli, zlib, bz2 or gzip (under any
import alias, or imported by name), the literal a latin-1 string `bytes("...", "l1")`
(golfpack's own wrapper) or a base85 / base64 / ascii85 / base32 one (`b85decode(b"...")`).
Calls are found in the syntax tree; the canonical base85 form is also found by pattern where
the tree cannot reach it (inside a string, in a file that does not parse). Only the literal
is decoded and decompressed: nothing is imported or executed.

Bounded: a source over `max_source` bytes, payloads decompressing to more than `max_payload`
bytes in all, or wrappers nested deeper than `max_depth` are refused with a WrapperError
(one line); a literal that does not decode is simply not a wrapper.
"""

from __future__ import annotations

import ast
import base64
import bz2
import functools
import lzma
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from golfpack.errors import GolfError

MAX_SOURCE = 16_000_000  # the whole submission budget: no code file it ships is larger
MAX_PAYLOAD = 64_000_000  # decompressed bytes, every payload of one read together
MAX_DEPTH = 8  # wrappers inside wrappers
CODECS = ("lzma", "brotli", "zlib", "bz2", "gzip")
_DECODERS = {"b85decode": base64.b85decode, "b64decode": base64.b64decode,
             "a85decode": base64.a85decode, "b32decode": base64.b32decode}
_LATIN1 = ("l1", "latin1", "latin-1", "iso-8859-1")
_B85_TEXT = re.compile(r'(lzma|brotli)\.decompress\(base64\.b85decode\(b"([^"]*)"\)\)')


class WrapperError(GolfError):
    """A self-extracting wrapper past the reader's bounds (too large, nested too deep)."""


@dataclass(frozen=True)
class Payload:
    """One decoded wrapper payload."""

    codec: str  # lzma | brotli | zlib | bz2 | gzip
    literal: str  # bytes (a latin-1 string) | b85 | b64 | a85 | b32
    data: bytes
    executed: bool  # the decompressed bytes go straight to exec() in the syntax tree
    depth: int = 1  # 1: in the source itself, 2: inside a payload, ...

    @property
    def method(self) -> str:
        return f"{self.codec}+{self.literal}"


def iter_payloads(source: bytes, *, nested: bool = True, max_source: int = MAX_SOURCE,
                  max_payload: int = MAX_PAYLOAD, max_depth: int = MAX_DEPTH
                  ) -> Iterator[Payload]:
    """Every wrapper payload of `source` in reading order, each followed (with `nested`) by
    the payloads inside it. Lazy: stop early and later literals are never decompressed."""
    if b"decompress" not in source:
        return
    if len(source) > max_source:
        raise WrapperError(f"a self-extracting source of {len(source):,} bytes is over the "
                           f"{max_source:,} a reader looks into")
    budget = [max_payload]
    yield from _walk(source, 1, nested, max_depth, max_payload, budget)


def payloads(source: bytes, **limits) -> list[Payload]:
    return list(iter_payloads(source, **limits))


def unwrap(source: bytes, **limits) -> tuple[bytes, str] | None:
    """(payload, "codec+literal") of a self-extracting script: its first
    `exec(codec.decompress(literal))`, one level deep; None when it has none."""
    for p in iter_payloads(source, nested=False, **limits):
        if p.executed:
            return p.data, p.method
    return None


def unwrapped_text(source: bytes, **limits) -> str:
    """The source (one character per byte) with the payload of each wrapper in it, and of
    each wrapper inside those, appended on lines of their own."""
    text = source.decode("latin-1")
    return text + "".join("\n" + p.data.decode("latin-1")
                          for p in iter_payloads(source, **limits))


def _walk(source: bytes, depth: int, nested: bool, max_depth: int, max_payload: int,
          budget: list[int]) -> Iterator[Payload]:
    for codec, literal, packed, executed in _calls(source):
        data = _decompress(codec, packed, budget[0], max_payload)
        if data is None:
            continue
        if depth > max_depth:
            raise WrapperError(f"self-extracting wrappers nested more than {max_depth} deep")
        budget[0] -= len(data)
        yield Payload(codec, literal, data, executed, depth)
        if nested and b"decompress" in data:
            yield from _walk(data, depth + 1, nested, max_depth, max_payload, budget)


def _calls(source: bytes) -> Iterator[tuple[str, str, bytes, bool]]:
    """(codec, literal kind, packed bytes, executed) of each decompress-a-literal call."""
    seen = set()
    for hit in _tree_calls(source):
        if hit[1] == "b85":
            seen.add((hit[0], hit[2]))
        yield hit
    for m in _B85_TEXT.finditer(source.decode("latin-1")):
        try:
            packed = base64.b85decode(m.group(2))
        except ValueError:
            continue
        if (m.group(1), packed) not in seen:
            yield m.group(1), "b85", packed, False


def _tree_calls(source: bytes) -> Iterator[tuple[str, str, bytes, bool]]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return
    aliases = _alias_map(tree)
    executed = {id(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call) and
                _func_name(n.func, aliases) == "exec" and n.args}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Call)):
            continue
        codec, _, attr = _func_name(node.func, aliases).rpartition(".")
        if attr != "decompress" or codec not in CODECS:
            continue
        found = _literal(node.args[0], aliases)
        if found is not None:
            yield codec, found[0], found[1], id(node) in executed


def _literal(call: ast.Call, aliases: dict[str, str]) -> tuple[str, bytes] | None:
    """(kind, packed bytes) of `bytes("...", "l1")` or `b85decode(b"...")`, else None."""
    dec = _func_name(call.func, aliases).rsplit(".", 1)[-1]
    if not call.args or not isinstance(call.args[0], ast.Constant):
        return None
    lit = call.args[0].value
    if dec == "bytes":  # a latin-1 string: one byte per character
        enc = call.args[1] if len(call.args) == 2 else None
        if not (isinstance(lit, str) and isinstance(enc, ast.Constant) and enc.value in _LATIN1):
            return None
        try:
            return "bytes", lit.encode("latin-1")
        except UnicodeEncodeError:
            return None
    if dec not in _DECODERS or not isinstance(lit, str | bytes):
        return None
    try:
        raw = lit.encode("ascii", "replace") if isinstance(lit, str) else lit
        return dec.removesuffix("decode"), _DECODERS[dec](raw)
    except ValueError:  # binascii.Error: not that encoding
        return None


def _alias_map(tree: ast.AST) -> dict[str, str]:
    """Local name -> what it was imported as (`import lzma as L` gives L -> lzma,
    `from lzma import decompress` gives decompress -> lzma.decompress)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _func_name(func: ast.AST, aliases: dict[str, str]) -> str:
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{aliases.get(func.value.id, func.value.id)}.{func.attr}"
    if isinstance(func, ast.Name):
        return aliases.get(func.id, func.id)
    return ""


def _decompress(codec: str, packed: bytes, room: int, max_payload: int) -> bytes | None:
    """The decompressed bytes, at most `room` of them (WrapperError past it); None when
    `packed` is not a whole stream of `codec` (or its library is not installed)."""
    try:
        if codec == "brotli":
            return _brotli(packed, room)
        new = {"lzma": lzma.LZMADecompressor, "bz2": bz2.BZ2Decompressor,
               "zlib": functools.partial(zlib.decompressobj, 15),
               "gzip": functools.partial(zlib.decompressobj, 31)}[codec]
        return _streams(new, packed, room)
    except _TooLarge:
        raise WrapperError(f"self-extracting payloads decompress to more than {max_payload:,} "
                           "bytes: not read") from None
    except (ValueError, EOFError, OSError, lzma.LZMAError, zlib.error):
        return None


class _TooLarge(Exception):
    pass


def _streams(new, data: bytes, room: int) -> bytes:
    """Concatenated streams as the codecs' own decompress() reads them: trailing bytes that
    are not a further stream are ignored; a truncated or empty stream is no stream."""
    out = bytearray()
    if not data:
        raise EOFError("empty stream")
    while data:
        d = new()
        try:
            out += d.decompress(data, room + 1 - len(out))
        except (OSError, lzma.LZMAError, zlib.error):
            if out:
                break
            raise
        if len(out) > room:
            raise _TooLarge
        if not d.eof:
            raise EOFError("truncated stream")
        data = d.unused_data
    return bytes(out)


def _brotli(packed: bytes, room: int) -> bytes | None:
    try:
        import brotli
    except ImportError:
        return None
    d = brotli.Decompressor()
    try:
        out = d.process(packed, output_buffer_limit=room + 1)
    except brotli.error:
        return None
    if len(out) > room:
        raise _TooLarge
    return out if d.is_finished() else None
