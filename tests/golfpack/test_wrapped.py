"""golfpack.wrapped: the one reader of self-extracting wrappers (latin-1 and base85 literals,
any codec alias, nested wrappers), which never runs what it reads and stays within its
bounds."""

from __future__ import annotations

import base64
import bz2
import gzip
import lzma
import zlib

import pytest

from golfpack.accounting import latin1_literal, self_extracting
from golfpack.wrapped import (
    WrapperError,
    iter_payloads,
    payloads,
    unwrap,
    unwrapped_text,
)

# running any of these would raise: the reader must only ever decode them
CODE = b"raise SystemExit('a reader ran the payload')\n" + b"x = 1\n" * 50


def _b85(data: bytes, codec: str = "lzma") -> bytes:
    return (f"import {codec},base64\nexec({codec}.decompress(base64.b85decode(b\""
            ).encode() + base64.b85encode(_pack(codec, data)) + b'")))\n'


def _pack(codec: str, data: bytes) -> bytes:
    if codec == "brotli":
        import brotli

        return brotli.compress(data)
    return {"lzma": lzma.compress, "zlib": zlib.compress, "bz2": bz2.compress,
            "gzip": gzip.compress}[codec](data)


def _l1(data: bytes) -> bytes:
    return (b"#coding:l1\nimport lzma;exec(lzma.decompress(bytes(" +
            latin1_literal(lzma.compress(data)) + b",'l1')))")


def test_golfpacks_own_latin1_wrapper():
    wrapper, codec = self_extracting(CODE)
    data, method = unwrap(wrapper)
    assert method == f"{codec}+bytes" and b"SystemExit" in data
    assert unwrap(_l1(CODE)) == (CODE, "lzma+bytes")


@pytest.mark.parametrize("codec", ["lzma", "zlib", "bz2", "gzip", "brotli"])
def test_base85_literal_of_each_codec(codec):
    assert unwrap(_b85(CODE, codec)) == (CODE, f"{codec}+b85")


def test_aliases_other_encodings_and_names_imported_from_a_module():
    packed = lzma.compress(CODE)
    cases = {
        b'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("%s")))':
            base64.b85encode(packed),
        b'from zlib import decompress as D\nfrom base64 import b64decode as E\n'
        b'exec(D(E(b"%s")))': base64.b64encode(zlib.compress(CODE)),
        b'import lzma as Z,base64\nexec(Z.decompress(base64.b32decode(b"%s")))':
            base64.b32encode(packed),
    }
    for template, lit in cases.items():
        data, _ = unwrap(template % lit)
        assert data == CODE
    latin = b"#coding:latin-1\nimport lzma as M\nexec(M.decompress(bytes(" + \
        latin1_literal(packed) + b", 'latin-1')))"
    assert unwrap(latin) == (CODE, "lzma+bytes")


def test_nested_wrappers_are_followed_in_order_and_bounded():
    inner = _l1(CODE)
    outer = _b85(inner)
    got = payloads(outer)
    assert [(p.depth, p.method, p.executed) for p in got] == [(1, "lzma+b85", True),
                                                              (2, "lzma+bytes", True)]
    assert got[1].data == CODE
    assert unwrap(outer) == (inner, "lzma+b85")  # a script's own wrapper: one level
    text = unwrapped_text(outer)
    assert text.startswith(outer.decode("latin-1")) and text.endswith(CODE.decode())
    deep = CODE
    for _ in range(5):
        deep = _b85(deep)
    assert len(payloads(deep, max_depth=5)) == 5
    with pytest.raises(WrapperError, match="nested more than 4 deep"):
        payloads(deep, max_depth=4)


def test_plain_sources_have_no_payload():
    for src in (b"print('hi')\n", CODE, b"import lzma\ndata = lzma.decompress(blob)\n",
                b"def f(:\n", b"\xff\xfe\x00 not python", b""):
        assert unwrap(src) is None and payloads(src) == []
        assert unwrapped_text(src) == src.decode("latin-1")


def test_a_decompressed_literal_not_passed_to_exec_is_read_but_not_the_scripts_wrapper():
    src = b"import lzma,base64\nblob = lzma.decompress(base64.b85decode(b\"" + \
        base64.b85encode(lzma.compress(CODE)) + b'"))\n'
    assert unwrap(src) is None
    assert [(p.data, p.executed) for p in payloads(src)] == [(CODE, False)]


def test_a_wrapper_the_syntax_tree_cannot_reach_is_found_by_its_text():
    wrapped = _b85(CODE)
    in_a_string = b"TEXT = " + repr(wrapped.decode()).encode() + b"\n"
    broken = wrapped + b"\ndef broken(:\n"
    for src in (in_a_string, broken):
        assert [p.data for p in payloads(src)] == [CODE]
        assert unwrap(src) is None  # not a script that would run it


def test_hostile_and_garbage_literals_are_not_wrappers():
    cases = [
        b'import lzma,base64\nexec(lzma.decompress(base64.b85decode(b"~~~~not b85")))',
        b'import lzma,base64\nexec(lzma.decompress(base64.b85decode(b"%s")))'
        % base64.b85encode(b"not an lzma stream at all"),
        b"import lzma\nexec(lzma.decompress(bytes('\\u20ac', 'l1')))",  # not latin-1
        b"import lzma\nexec(lzma.decompress(bytes('abc', 'utf-8')))",  # not a latin-1 literal
        b"import lzma\nexec(lzma.decompress(bytes('', 'l1')))",
        b"import lzma,base64\nexec(lzma.decompress(base64.b85decode(12345)))",
        b"import pickle,base64\nexec(pickle.decompress(base64.b85decode(b'%s')))"
        % base64.b85encode(lzma.compress(CODE)),  # not a codec
        _l1(CODE)[:-20] + b"',l1')))",  # truncated stream
        b"import lzma\nexec(lzma.decompress(bytes(" + latin1_literal(
            lzma.compress(CODE)[:-8]) + b",'l1')))",
        b"import lzma\nx = " + b"-" * 100_000 + b"lzma.decompress(b'')",  # parser gives up
        b"import lzma\nx = " + b"(" * 300 + b"lzma.decompress(b'')" + b")" * 300,
    ]
    for src in cases:
        assert unwrap(src) is None and payloads(src) == [], src[:60]


def test_size_bounds_are_declared_one_line_errors():
    bomb = _b85(b"\0" * 3_000_000)  # ~700 B of base85 -> 3 MB
    with pytest.raises(WrapperError) as exc:
        unwrap(bomb, max_payload=1_000_000)
    assert "more than 1,000,000 bytes" in str(exc.value) and "\n" not in str(exc.value)
    assert exc.value.exit_code == 2
    assert len(unwrap(bomb)[0]) == 3_000_000  # within the default bound
    for codec in ("zlib", "bz2", "gzip", "brotli"):
        with pytest.raises(WrapperError):
            unwrap(_b85(b"\0" * 3_000_000, codec), max_payload=1_000_000)
    # the bound holds across all payloads of one read, nested ones too
    two = _b85(b"\0" * 600_000) + _b85(b"\0" * 600_000)
    with pytest.raises(WrapperError):
        payloads(two, max_payload=1_000_000)
    with pytest.raises(WrapperError, match="over the 1,000"):
        unwrap(_b85(CODE) + b"#" * 2000, max_source=1000)
    assert unwrap(b"#" * 2000, max_source=1000) is None  # no wrapper: nothing to refuse


def test_reading_is_lazy():
    first, rest = _b85(CODE), _b85(b"\0" * 3_000_000)
    it = iter_payloads(first + rest, max_payload=1_000_000)
    assert next(it).data == CODE  # the bomb after it is not touched yet
    with pytest.raises(WrapperError):
        next(it)
