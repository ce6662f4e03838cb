"""Shared fixtures: the real data beside the project (skipped when absent), a tiny
tokenizer + corpus built from text that ships with Python, and the tiny model (frozen, as
scoring takes it; saved as a checkpoint, as the CLIs take it) with its byte tables."""

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
def c4_shards(shared_data, tmp_path_factory):
    """`make(train_docs, val_docs)` -> (folder, tokenizer): the first C4 documents as train
    shards and the first FineWeb documents as val shards, with the challenge's sp1024."""
    from golfeval.data.build import build

    tok = shared_data / "fineweb_1024_bpe.model"

    def make(train_docs: int, val_docs: int):
        out = tmp_path_factory.mktemp("c4shards")
        build(tok, shared_data / "c4_2000docs.jsonl", out, val_docs=0, max_docs=train_docs,
              force=True)
        build(tok, shared_data / "fineweb_val_200docs.jsonl", out, val_docs=val_docs,
              max_docs=val_docs, force=True)
        return out, tok

    return make


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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """`tinymodels.saved_gpt()`: the default tiny model as a safe checkpoint (read-only)."""
    from tinymodels import saved_gpt

    return saved_gpt(tmp_path_factory.mktemp("ck") / "tiny.safetensors")


@pytest.fixture(scope="module")
def model():
    """`tinymodels.frozen_gpt()`, built once per test module (modules may define their own)."""
    from tinymodels import frozen_gpt

    return frozen_gpt()


@pytest.fixture(scope="module")
def tables(tiny_tokenizer):
    """The byte tables of `tiny_tokenizer`, built once per test module."""
    from golfeval.data.bytetables import ByteTables

    return ByteTables.from_tokenizer(tiny_tokenizer)


@pytest.fixture(scope="session")
def torchrun_score():
    """`run(args, timeout)`: `python -m golfeval.score ARGS` on two gloo ranks under torchrun
    (one thread each); asserts it exits 0 and returns its JSON report."""
    import json
    import subprocess
    import sys

    def run(args, *, timeout):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "golfeval.score", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    return run


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread avoids thread-pool hand-offs on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
