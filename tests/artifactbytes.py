"""Byte surgery on artifacts for hostile-input tests: split a file into its header body and
payloads, and seal an arbitrary (mutated or hand-built) header body into a file whose header
digest is valid, so that the reader's checks past the digest are what gets exercised."""

from __future__ import annotations

from golfpack.format.binio import Writer
from golfpack.format.header import _header_body
from golfpack.format.layout import MAGIC, digest


def split(blob: bytes) -> tuple[bytes, bytes]:
    """(header body, payloads) of an artifact."""
    hl = int.from_bytes(blob[12:16], "little")
    return _header_body(blob[16:16 + hl]), blob[16 + hl + 8:]


def reseal(body: bytes, payloads: bytes) -> bytes:
    """A file with a valid header digest around an arbitrary header body (stored, version 1)."""
    w = Writer()
    w.u8(0)
    w.varint(len(body))
    w.raw(body)
    inner = w.getvalue()
    head = MAGIC + (1).to_bytes(2, "little") + bytes(2) + len(inner).to_bytes(4, "little") + inner
    return head + digest(head) + payloads
