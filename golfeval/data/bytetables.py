"""Bytes per target token: the challenge's tokenizer-agnostic byte accounting.

bpb divides nats by the number of UTF-8 bytes the scored tokens stand for. For a
sentencepiece tokenizer that count comes from three per-token tables:

- base_bytes[y]: UTF-8 length of y's piece without its leading ▁ (U+2581); byte-fallback
  pieces (<0xNN>) count 1; control/unknown/unused pieces (BOS, EOS, PAD, UNK) count 0.
- has_leading_space[y]: y's piece starts with ▁, i.e. stands for a space before its text.
- is_boundary[x]: control/unknown/unused tokens; a space after one of them is not counted
  (the document's first word carries no space in the text).

bytes(target y | previous x) = base_bytes[y] + (has_leading_space[y] and not is_boundary[x]).

Tokenizers the rule cannot count honestly are refused: no standalone ▁ piece (a space
would cost 3 byte-fallback tokens counted as 3 bytes), a ▁ inside a piece (the rule
counts only a leading one), user-defined pieces (their UTF-8 length is not the text they
stand for) unless per-token byte sidecars override the tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from golfpack.errors import GolfError

SPACE = "\u2581"
# sentencepiece ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_CHUNK = 1 << 22


class ByteTableError(GolfError):
    """The tokenizer (or the data) cannot be byte-counted by the challenge's rule."""


@dataclass
class ByteTables:
    base_bytes: np.ndarray          # int64 [V]
    has_leading_space: np.ndarray   # bool [V]
    is_boundary: np.ndarray         # bool [V]
    vocab_size: int
    user_defined: np.ndarray | None = None  # bool [V]; only set when they were allowed

    @classmethod
    def from_tokenizer(cls, path_or_sp, allow_user_defined: bool = False) -> ByteTables:
        """Build the tables from a .model path or a loaded SentencePieceProcessor.

        `allow_user_defined` is for callers that take bytes from sidecars: the tables of
        user-defined pieces are then filled with their UTF-8 length and flagged, not refused.
        """
        name, proto = _model_proto(path_or_sp)
        return cls.from_pieces(_parse_pieces(proto, name), name, allow_user_defined)

    @classmethod
    def from_pieces(cls, pieces: list[tuple[str, int]], name: str = "tokenizer",
                    allow_user_defined: bool = False) -> ByteTables:
        """Tables from (piece, type) pairs in id order (types as in sentencepiece's proto)."""
        v = len(pieces)
        base = np.zeros(v, dtype=np.int64)
        lead = np.zeros(v, dtype=bool)
        boundary = np.zeros(v, dtype=bool)
        user = np.zeros(v, dtype=bool)
        has_space_piece = False
        for i, (piece, kind) in enumerate(pieces):
            if kind in (CONTROL, UNKNOWN, UNUSED):
                boundary[i] = True
            elif kind == BYTE:
                base[i] = 1
            elif kind in (NORMAL, USER_DEFINED):
                if kind == USER_DEFINED:
                    if not allow_user_defined:
                        raise ByteTableError(
                            f"{name}: user-defined piece {piece!r} (id {i}) has no fixed byte "
                            "count; give per-token byte sidecars (fineweb_val_bytes_*.bin)")
                    user[i] = True
                elif SPACE in piece[1:]:
                    raise ByteTableError(
                        f"{name}: piece {piece!r} (id {i}) holds a non-leading \u2581; "
                        "the byte rule counts only a leading space")
                lead[i] = piece.startswith(SPACE)
                base[i] = len((piece[1:] if lead[i] else piece).encode("utf-8"))
                has_space_piece |= kind == NORMAL and piece == SPACE
            else:
                raise ByteTableError(f"{name}: piece {piece!r} (id {i}) has unknown type {kind}")
        if not has_space_piece:
            raise ByteTableError(
                f"{name}: no standalone \u2581 piece, so a space costs byte-fallback tokens "
                "that the rule would count as 3 bytes")
        return cls(base, lead, boundary, v, user if user.any() else None)

    def check_ids(self, tokens: np.ndarray, what: str = "data") -> None:
        if tokens.size and int(tokens.max()) >= self.vocab_size:
            hi = int(tokens.max())
            raise ByteTableError(f"{what}: token id {hi} is outside the tokenizer's "
                                 f"{self.vocab_size}-piece vocabulary")

    def target_bytes(self, tokens: np.ndarray) -> np.ndarray:
        """int64 [len(tokens)-1]: bytes of target t = tokens[t+1] given tokens[t]."""
        tokens = np.asarray(tokens)
        self.check_ids(tokens)
        n = max(0, tokens.size - 1)
        out = np.empty(n, dtype=np.int64)
        for lo in range(0, n, _CHUNK):  # chunked: the full val split is 62M tokens
            hi = min(n, lo + _CHUNK)
            y = tokens[lo + 1: hi + 1].astype(np.int64)
            x = tokens[lo:hi].astype(np.int64)
            out[lo:hi] = self.base_bytes[y] + (self.has_leading_space[y] & ~self.is_boundary[x])
        return out

    def summary(self) -> dict:
        return {"vocab_size": self.vocab_size,
                "boundary": int(self.is_boundary.sum()),
                "leading_space": int(self.has_leading_space.sum()),
                "user_defined": 0 if self.user_defined is None else int(self.user_defined.sum())}


def sidecar_target_bytes(sidecar_paths, n_tokens: int) -> np.ndarray:
    """int64 [n_tokens-1] target bytes from byte sidecars (one uint16 per token, the UTF-8
    bytes that token stands for); the first n_tokens entries of the concatenated files."""
    from golfeval.data.shards import read_shard

    parts, have = [], 0
    for path in sidecar_paths:
        if have >= n_tokens:
            break
        side = read_shard(path)
        parts.append(np.asarray(side[: n_tokens - have]))
        have += parts[-1].size
    if have < n_tokens:
        raise ByteTableError(f"byte sidecars hold {have} entries but the data has "
                             f"{n_tokens} tokens")
    side = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
    return side[1:n_tokens].astype(np.int64)


def _model_proto(path_or_sp) -> tuple[str, bytes]:
    if isinstance(path_or_sp, (str, os.PathLike)):
        from golfeval.data.tokenizer import load

        load(path_or_sp)  # one-line errors for missing or non-sentencepiece files
        with open(path_or_sp, "rb") as fh:
            return os.fspath(path_or_sp), fh.read()
    return "tokenizer", bytes(path_or_sp.serialized_model_proto())


# --- a minimal protobuf reader: piece strings and types, without needing protobuf ---

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) of one message; value is bytes for wire type 2."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield field, wire, value


def _parse_pieces(proto: bytes, name: str) -> list[tuple[str, int]]:
    """ModelProto.pieces (field 1) -> [(piece, type)]; type defaults to NORMAL."""
    pieces = []
    try:
        for field, wire, value in _fields(proto):
            if field != 1 or wire != 2:
                continue
            piece, kind = "", NORMAL
            for f, w, v in _fields(value):
                if f == 1 and w == 2:
                    piece = v.decode("utf-8")
                elif f == 3 and w == 0:
                    kind = v
            pieces.append((piece, kind))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ByteTableError(f"{name}: cannot read the model's pieces ({exc})") from None
    if not pieces:
        raise ByteTableError(f"{name}: the model holds no pieces")
    return pieces


@dataclass
class DocumentCheck:
    line: int
    tokens: int
    table_bytes: int
    normalized_bytes: int
    raw_bytes: int


@dataclass
class CrossCheck:
    documents: int
    tokens: int              # BOS-prefixed stream
    table_bytes: int         # over every target of that stream
    normalized_bytes: int
    raw_bytes: int
    mismatches: list[DocumentCheck]

    def to_dict(self, limit: int | None = None) -> dict:
        from dataclasses import asdict

        d = asdict(self)
        d["mismatched_documents"] = len(self.mismatches)
        if limit is not None:
            d["mismatches"] = d["mismatches"][:limit]
        return d


def crosscheck_documents(tokenizer_path, docs_path, max_docs: int | None = None,
                         bos_id: int = 1, batch_docs: int = 256) -> CrossCheck:
    """Compare the tables' byte count of each BOS-prefixed document with the UTF-8 length of
    the document as the tokenizer's normalizer leaves it (what the tokens really spell)."""
    from golfeval.data.build import read_jsonl_texts
    from golfeval.data.tokenizer import load

    sp = load(tokenizer_path)
    tables = ByteTables.from_tokenizer(tokenizer_path)
    total = CrossCheck(0, 0, 0, 0, 0, [])
    batch: list[tuple[int, str]] = []

    def flush():
        encoded = sp.encode([t for _, t in batch], out_type=int)
        for (line, text), ids in zip(batch, encoded, strict=True):
            stream = np.empty(len(ids) + 1, dtype=np.int64)
            stream[0], stream[1:] = bos_id, ids
            got = int(tables.target_bytes(stream).sum())
            want = len(sp.normalize(text).replace(SPACE, " ").encode("utf-8"))
            raw = len(text.encode("utf-8"))
            total.documents += 1
            total.tokens += stream.size
            total.table_bytes += got
            total.normalized_bytes += want
            total.raw_bytes += raw
            if got != want:
                total.mismatches.append(DocumentCheck(line, stream.size, got, want, raw))
        batch.clear()

    for line, text in read_jsonl_texts(docs_path):
        if max_docs is not None and total.documents + len(batch) >= max_docs:
            break
        batch.append((line, text))
        if len(batch) >= batch_docs:
            flush()
    if batch:
        flush()
    if total.documents == 0:
        raise GolfError(f"{docs_path}: no documents")
    return total
