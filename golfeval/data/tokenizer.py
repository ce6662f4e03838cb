"""Sentencepiece tokenizers: loading with clear errors, a content hash, and training one
with the challenge's settings (BPE, byte fallback, split digits, nmt_nfkc, no dummy prefix,
pad 0 / bos 1 / eos 2 / unk 3)."""

from __future__ import annotations

import hashlib
import os

from golfpack.errors import GolfError

BOS_ID = 1


class TokenizerError(GolfError):
    """A tokenizer file is missing, unreadable, or unfit for the job."""


def load(path):
    """Load a sentencepiece model, or raise TokenizerError with the reason."""
    import sentencepiece as spm

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: no such tokenizer file")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(path)
    except Exception as exc:  # sentencepiece raises OSError or RuntimeError
        raise TokenizerError(f"{path}: not a sentencepiece model ({exc})") from None
    return sp


def file_sha256(path) -> str:
    """sha256 of the file's bytes; TokenizerError when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise TokenizerError(f"{os.fspath(path)}: cannot read the tokenizer file "
                             f"({exc.strerror or exc})") from None
    return h.hexdigest()


def train(texts, model_prefix, vocab_size: int = 1024, input_sentence_size: int = 0,
          num_threads: int = 2) -> str:
    """Train a BPE tokenizer on an iterable of strings with the challenge's settings.
    Returns the path of the written `.model` file."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=os.fspath(model_prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        character_coverage=0.999,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        hard_vocab_limit=False,
        num_threads=num_threads,
        minloglevel=2,
    )
    return os.fspath(model_prefix) + ".model"
