"""Build challenge-format shards from a JSONL corpus: every document BOS-prefixed (no EOS),
the first N documents to validation shards, the rest to training shards."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from golfeval.data import shards, tokenizer
from golfpack.errors import GolfError, OutputError

DEFAULT_SHARD_TOKENS = 100_000_000
DEFAULT_VAL_DOCS = 50_000


@dataclass
class BuildSummary:
    val_docs: int = 0
    val_tokens: int = 0
    train_docs: int = 0
    train_tokens: int = 0
    vocab_size: int = 0
    tokenizer_sha256: str = ""
    files: list[str] = field(default_factory=list)
    corpora: list[dict] = field(default_factory=list)  # path, docs read, split (val/docs)

    def to_dict(self) -> dict:
        return asdict(self)


def read_jsonl_texts(path, start_line: int = 1):
    """Yield (line_number, text) from `{"text": ...}` lines; blank lines are skipped.
    A line that is not such an object raises GolfError naming the line."""
    path = os.fspath(path)
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise GolfError(f"{path}: cannot open ({exc.strerror})") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, start_line):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise GolfError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise GolfError(f'{path}:{lineno}: expected an object with a "text" string')
                yield lineno, obj["text"]
        except UnicodeDecodeError as exc:
            raise GolfError(f"{path}: not UTF-8 ({exc.reason})") from None


class _ShardWriter:
    """Accumulates a token stream and cuts it into fixed-size shard files."""

    def __init__(self, out_dir, split: str, shard_tokens: int, force: bool):
        self.out_dir, self.split = out_dir, split
        self.shard_tokens, self.force = shard_tokens, force
        self.buf: list[np.ndarray] = []
        self.buffered = 0
        self.files: list[str] = []

    def add(self, tokens: np.ndarray) -> None:
        self.buf.append(tokens)
        self.buffered += tokens.size
        while self.buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int) -> None:
        stream = np.concatenate(self.buf) if self.buf else np.zeros(0, np.uint16)
        path = os.path.join(self.out_dir, f"fineweb_{self.split}_{len(self.files):06d}.bin")
        shards.write_shard(path, stream[:n], force=self.force)
        self.files.append(path)
        rest = stream[n:]
        self.buf, self.buffered = ([rest] if rest.size else []), rest.size

    def close(self) -> list[str]:
        if self.buffered:
            self._flush(self.buffered)
        return self.files


def build(tokenizer_path, docs, out_dir, *, val_docs: int | None = None, val=(),
          shard_tokens: int = DEFAULT_SHARD_TOKENS, force: bool = False,
          batch_docs: int = 512, workers: int | None = None, progress: bool = False,
          max_docs: int | None = None) -> BuildSummary:
    """Tokenize corpora into shards under `out_dir`; return what was written.

    `docs` is one JSONL path or a sequence of them, read in order as one stream of
    documents. Validation holds every document of the `val` corpora (read first), then the
    first `val_docs` documents of `docs` (default: 50,000 without `val`, 0 with it).
    `max_docs` caps the documents read in all.
    """
    docs_paths, val_paths = _paths(docs), _paths(val)
    if not docs_paths and not val_paths:
        raise GolfError("no corpus to build from")
    seen: set[str] = set()
    for path in val_paths + docs_paths:
        key = os.path.realpath(path)
        if key in seen:
            raise GolfError(f"corpus {path} is given twice: its documents would be counted "
                            "twice (and could sit in both splits)")
        seen.add(key)
    if val_docs is None:
        val_docs = 0 if val_paths else DEFAULT_VAL_DOCS
    if shard_tokens <= 0:
        raise GolfError("shard tokens must be positive")
    if val_docs < 0:
        raise GolfError("validation documents must be >= 0")
    if workers is not None and workers < 1:
        raise GolfError("encoding workers must be >= 1")
    sp = tokenizer.load(tokenizer_path)
    vocab = sp.vocab_size()
    if vocab > 0xFFFF + 1:
        raise GolfError(f"{tokenizer_path}: vocab size {vocab} does not fit uint16 shards")
    out_dir = os.fspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise GolfError(f"{out_dir} is not empty; pass `force=True` to write into it",
                        param="force")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise GolfError(f"{out_dir} exists and is not a directory")
    for path in val_paths + docs_paths:
        if not os.path.isfile(path):
            raise GolfError(f"{path}: no such file")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    if workers is None:  # this process's share of the (idle) cores, as torch gets
        from golfpack.threads import default_threads

        workers = min(8, default_threads())

    summary = BuildSummary(vocab_size=vocab, tokenizer_sha256=tokenizer.file_sha256(tokenizer_path))
    writers = {s: _ShardWriter(out_dir, s, shard_tokens, force) for s in ("val", "train")}
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(os.path.getsize(p) for p in val_paths + docs_paths)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="encoding", leave=False,
                   disable=None)  # quiet when stderr is not a terminal

    batch: list[tuple[str, bool]] = []  # (text, goes to validation)
    n_docs = 0

    def flush_batch():
        nonlocal n_docs
        encoded = sp.encode([t for t, _ in batch], out_type=int, num_threads=workers)
        for ids, (_, is_val) in zip(encoded, batch, strict=True):
            arr = np.empty(len(ids) + 1, dtype=np.uint16)
            arr[0] = tokenizer.BOS_ID
            arr[1:] = ids
            if is_val:
                writers["val"].add(arr)
                summary.val_docs += 1
                summary.val_tokens += arr.size
            else:
                writers["train"].add(arr)
                summary.train_docs += 1
                summary.train_tokens += arr.size
            n_docs += 1
        if bar is not None:
            bar.update(sum(len(t.encode("utf-8")) + 13 for t, _ in batch))
        batch.clear()

    read = 0
    from_docs = 0  # documents of `docs` seen so far (the first val_docs go to validation)
    for path, is_val_corpus in [(p, True) for p in val_paths] + [(p, False) for p in docs_paths]:
        count = 0
        for _, text in read_jsonl_texts(path):
            if max_docs is not None and read >= max_docs:
                break
            if is_val_corpus:
                is_val = True
            else:
                is_val = from_docs < val_docs
                from_docs += 1
            batch.append((text, is_val))
            read += 1
            count += 1
            if len(batch) >= batch_docs:
                flush_batch()
        summary.corpora.append({"path": path, "docs": count,
                                "split": "val" if is_val_corpus else "docs"})
    if batch:
        flush_batch()
    if bar is not None:
        bar.close()
    if n_docs == 0:
        raise GolfError(f"{', '.join(val_paths + docs_paths)}: no documents")
    summary.files = writers["val"].close() + writers["train"].close()
    return summary


def _paths(value) -> list[str]:
    """One path or a sequence of paths, as strings."""
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]
