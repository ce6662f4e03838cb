"""Training and validation tokens.

Training reads one endless stream: the train shards concatenated in sorted order, wrapping
around at the end. Every optimizer step takes the next contiguous chunk of
world x accum x (micro_tokens + 1) tokens and gives each (rank, micro-step) its own disjoint
span of micro_tokens + 1 tokens (inputs and the targets shifted by one). The stream position
(tokens consumed) is the loader's whole state, so a checkpoint restores it exactly, and the
chunk a step reads does not depend on the world size. Validation reads only val shards and
training only train shards; a file named by both is refused.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from golfeval.data.shards import ShardError, find_shards, read_header, read_shard


class DataError(ShardError):
    """Training or validation data that cannot be used (missing, mixed splits, bad ids)."""


def whole_documents(tokens: np.ndarray, bos_id: int = 1, limit: int = 16) -> list[list[int]]:
    """Up to `limit` complete documents (BOS to the next BOS, BOS dropped) of a stream."""
    starts = np.flatnonzero(np.asarray(tokens) == bos_id)
    pairs = zip(starts[:-1], starts[1:], strict=True)
    return [np.asarray(tokens[a + 1:b]).tolist() for a, b in pairs if b > a + 1][:limit]


def check_tokenizer(tokenizer, val_tokens: np.ndarray, train_tokens: np.ndarray,
                    recorded_sha256: str | None = None, min_match: float = 0.5) -> str:
    """Refuse a tokenizer that did not make these shards (a wrong one trains fine and logs
    a wrong bits-per-byte); returns the tokenizer's sha256.

    Checks: every token id below the vocabulary size; the recorded sha256, when there is
    one; and a round trip: re-encoding the decoded text of whole documents reproduces
    their ids for at least `min_match` of them (every one with the right tokenizer on the
    challenge's data; essentially none with another vocabulary)."""
    from golfeval.data.tokenizer import file_sha256, load

    sp = load(tokenizer)
    vocab = sp.vocab_size()
    sha = file_sha256(tokenizer)
    if recorded_sha256 and recorded_sha256 != sha:
        raise DataError(f"{tokenizer}: sha256 {sha[:16]}... differs from the one the data "
                        f"records ({recorded_sha256[:16]}...)")
    for name, tokens in (("validation", val_tokens), ("training", train_tokens)):
        if tokens.size and int(tokens.max()) >= vocab:
            raise DataError(f"{name} token id {int(tokens.max())} is >= the vocabulary of "
                            f"{tokenizer} ({vocab} pieces): the shards were made with "
                            "another tokenizer")
        docs = whole_documents(tokens)
        if not docs:
            continue
        same = sum(sp.encode(sp.decode(ids), out_type=int) == ids for ids in docs)
        if same < min_match * len(docs):
            hi = int(tokens.max())
            raise DataError(f"{tokenizer} ({vocab} pieces) did not make the {name} shards: "
                            f"re-encoding {len(docs)} decoded documents reproduces {same} "
                            f"(largest token id in the data: {hi})")
    return sha


def _pattern(data_dir, glob: str) -> str:
    return glob if os.path.isabs(glob) else os.path.join(os.fspath(data_dir), glob)


def resolve_shards(data_dir, train_glob: str, val_glob: str) -> tuple[list[str], list[str]]:
    """The train and val shard lists; each split is checked by name, and no file may serve
    both (training on validation text would make every score meaningless)."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: no such data directory")
    train = find_shards(_pattern(data_dir, train_glob), kind="train")
    val = find_shards(_pattern(data_dir, val_glob), kind="val")
    train_real = {os.path.realpath(p) for p in train}
    both = [p for p in val if os.path.realpath(p) in train_real]
    if both:
        raise DataError(f"{both[0]} is matched by both train_files and val_files")
    bad = [p for p in train if "_val_" in os.path.basename(p)]
    if bad:
        raise DataError(f"{bad[0]} looks like a validation shard; training refuses it")
    return train, val


class TokenStream:
    """The train shards as one cyclic token stream with an integer position."""

    def __init__(self, paths: list[str], vocab_size: int):
        self.paths = list(paths)
        self.vocab_size = vocab_size
        self.sizes = [read_header(p) for p in self.paths]
        self.starts = np.concatenate(([0], np.cumsum(self.sizes))).astype(np.int64)
        self.total = int(self.starts[-1])
        if self.total < 2:
            raise DataError("the training shards hold fewer than 2 tokens")
        self._maps: dict[int, np.ndarray] = {}
        self.position = 0

    def fingerprint(self) -> list[list]:
        """What the checkpoint records to recognise the same stream on resume."""
        return [[os.path.basename(p), n] for p, n in zip(self.paths, self.sizes, strict=True)]

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._maps:
            self._maps[i] = read_shard(self.paths[i])
        return self._maps[i]

    def read(self, offset: int, n: int) -> np.ndarray:
        """n tokens starting at stream offset `offset` (wrapping), as int64."""
        out = np.empty(n, dtype=np.int64)
        pos, filled = offset % self.total, 0
        while filled < n:
            i = int(np.searchsorted(self.starts, pos, side="right") - 1)
            local = pos - int(self.starts[i])
            take = min(n - filled, self.sizes[i] - local)
            out[filled:filled + take] = self._shard(i)[local:local + take]
            filled += take
            pos = (pos + take) % self.total
        if n and int(out.max()) >= self.vocab_size:
            raise DataError(f"training token id {int(out.max())} near stream offset {offset} "
                            f"is >= vocab size {self.vocab_size}")
        return out

    def state(self) -> dict:
        return {"position": self.position, "total": self.total}

    def load_state(self, state: dict) -> None:
        if int(state.get("total", self.total)) != self.total:
            raise DataError(f"checkpoint stream held {state['total']} tokens, the train shards "
                            f"now hold {self.total}; resume needs the same data")
        self.position = int(state["position"])


class BatchLoader:
    """Cuts each step's chunk into this rank's micro-batches."""

    def __init__(self, stream: TokenStream, rank: int, world: int, accum: int,
                 micro_seqs: int, seq_len: int, device: torch.device):
        self.stream, self.rank, self.world, self.accum = stream, rank, world, accum
        self.seq_len, self.micro_seqs, self.device = seq_len, micro_seqs, device
        self.span = micro_seqs * seq_len + 1

    @property
    def step_tokens(self) -> int:
        return self.world * self.accum * self.span

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(inputs, targets)] for each of this rank's micro-steps, then advance the stream."""
        base = self.stream.position + self.rank * self.accum * self.span
        raw = self.stream.read(base, self.accum * self.span)
        self.stream.position += self.step_tokens
        out = []
        for m in range(self.accum):
            span = torch.from_numpy(raw[m * self.span:(m + 1) * self.span])
            x = span[:-1].view(self.micro_seqs, self.seq_len)
            y = span[1:].view(self.micro_seqs, self.seq_len)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
                y = y.pin_memory().to(self.device, non_blocking=True)
            out.append((x, y))
        return out


def load_val_tokens(paths: list[str], vocab_size: int, max_tokens: int = 0) -> np.ndarray:
    """Validation tokens (the first max_tokens of the val stream; 0 = all), checked < vocab."""
    parts, total = [], 0
    for path in paths:
        t = read_shard(path, vocab_size)
        if max_tokens:
            t = t[: max(0, max_tokens - total)]
        parts.append(np.asarray(t))
        total += t.size
        if max_tokens and total >= max_tokens:
            break
    if total < 2:
        raise DataError("the validation shards hold fewer than 2 tokens")
    return np.concatenate(parts)
