"""Shared fixtures: the real data beside the project (skipped when absent) and a tiny
tokenizer + corpus built from text that ships with Python."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_RECORDS = SHARED / "records"

# The suite's tensors are tiny and its CLI subprocesses run beside the pytest process: one
# thread per process is the fastest setting on every machine we measured (a shared 2-core box
# ran a tiny training step in 1.3 s with it, 18.5 s with a thread per core). The environment
# still wins (e.g. OMP_NUM_THREADS=4 make test).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "fineweb_1024_bpe.model").is_file():
        pytest.skip("../shared/data is absent (real FineWeb docs and tokenizers live there)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_records() -> Path:
    if not SHARED_RECORDS.is_dir():
        pytest.skip("../shared/records is absent (real record folders live there)")
    return SHARED_RECORDS


@pytest.fixture(scope="session")
def pydoc_corpus(tmp_path_factory) -> Path:
    """JSONL of the pydoc topic documents (~0.47 MB)."""
    from golfeval.data.corpus import pydoc_documents, write_jsonl

    path = tmp_path_factory.mktemp("corpus") / "pydoc.jsonl"
    return Path(write_jsonl(pydoc_documents(), path))


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A 512-piece BPE tokenizer with the challenge's settings, trained on pydoc text."""
    from golfeval.data.corpus import pydoc_documents
    from golfeval.data.tokenizer import train

    prefix = tmp_path_factory.mktemp("tok") / "tiny512"
    return Path(train(pydoc_documents(), prefix, vocab_size=512))


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory, tiny_tokenizer, pydoc_corpus) -> Path:
    """Shards of the pydoc corpus: first 40 documents validation, the rest training."""
    from golfeval.data.build import build

    out = tmp_path_factory.mktemp("shards")
    build(tiny_tokenizer, pydoc_corpus, out, val_docs=40, shard_tokens=50_000, force=True)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread avoids thread-pool hand-offs on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
