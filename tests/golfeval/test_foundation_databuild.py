"""`golfeval data build`: tokenization into BOS-prefixed shards, refusals, known answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golfeval.data import shards
from golfeval.data.build import build
from golfpack.errors import GolfError

GOLFEVAL = str(Path(sys.executable).parent / "golfeval")


def test_build_small_corpus(tmp_path, tiny_tokenizer):
    import sentencepiece as spm

    docs = ["hello world, this is a test.", "second document\nwith two lines", "x" * 50]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    s = build(tiny_tokenizer, corpus, tmp_path / "out", val_docs=1, shard_tokens=10)
    sp = spm.SentencePieceProcessor(model_file=str(tiny_tokenizer))
    enc = [[1] + sp.encode(d) for d in docs]
    assert s.val_docs == 1 and s.val_tokens == len(enc[0])
    assert s.train_docs == 2 and s.train_tokens == len(enc[1]) + len(enc[2])
    val = shards.load_tokens(tmp_path / "out", kind="val")
    train = shards.load_tokens(tmp_path / "out", kind="train")
    assert val.tolist() == enc[0]
    assert train.tolist() == enc[1] + enc[2]
    # 10-token shards: every file but the last is full.
    sizes = [shards.read_header(f) for f in s.files if "_train_" in f]
    assert all(n == 10 for n in sizes[:-1]) and 0 < sizes[-1] <= 10
    assert int(np.sum(train == 1)) == 2  # one BOS per document, no EOS


def test_build_refuses_nonempty_output(tmp_path, tiny_tokenizer, pydoc_corpus):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(GolfError, match="not empty; pass `force=True`"):
        build(tiny_tokenizer, pydoc_corpus, out, val_docs=5)
    assert (out / "keep.txt").read_text() == "precious"


def test_build_reports_bad_jsonl_line(tmp_path, tiny_tokenizer):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "ok"}\n{"text": 5}\n')
    with pytest.raises(GolfError, match=r"bad.jsonl:2: expected an object"):
        build(tiny_tokenizer, corpus, tmp_path / "o", val_docs=1)
    corpus.write_text('{"text": "ok"}\n\n{not json\n')
    with pytest.raises(GolfError, match=r"bad.jsonl:3: not valid JSON"):
        build(tiny_tokenizer, corpus, tmp_path / "o2", val_docs=1)


def test_build_refuses_non_tokenizer(tmp_path, pydoc_corpus):
    fake = tmp_path / "fake.model"
    fake.write_bytes(b"not a model")
    with pytest.raises(GolfError, match="not a sentencepiece model"):
        build(fake, pydoc_corpus, tmp_path / "o", val_docs=1)


def test_build_refuses_vocab_beyond_uint16(tmp_path, tiny_tokenizer, pydoc_corpus,
                                          monkeypatch):
    from golfeval.data import tokenizer
    real_load = tokenizer.load

    class Big:
        def __init__(self, sp):
            self.sp = sp

        def vocab_size(self):
            return 70_000

        def __getattr__(self, name):
            return getattr(self.sp, name)

    monkeypatch.setattr(tokenizer, "load", lambda p: Big(real_load(p)))
    with pytest.raises(GolfError, match="does not fit uint16"):
        build(tiny_tokenizer, pydoc_corpus, tmp_path / "o", val_docs=1)


def test_cli_json_and_errors(tmp_path, tiny_tokenizer, pydoc_corpus):
    out = tmp_path / "shards"
    cmd = [GOLFEVAL, "data", "build", "--tokenizer", str(tiny_tokenizer), "--docs",
           str(pydoc_corpus), "--out", str(out), "--val-docs", "20", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert {"val_docs", "val_tokens", "train_docs", "train_tokens", "files"} <= set(summary)
    assert summary["val_docs"] == 20 and summary["train_docs"] > 100
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error:") and len(again.stderr.strip().splitlines()) == 1


def test_known_answer_fineweb_200(tmp_path, shared_data):
    s = build(shared_data / "fineweb_1024_bpe.model", shared_data / "fineweb_val_200docs.jsonl",
              tmp_path / "fw", val_docs=200)
    assert s.val_docs == 200 and s.train_docs == 0
    assert s.val_tokens == 628_457
    tokens = shards.load_tokens(tmp_path / "fw", kind="val", vocab_size=1024)
    assert tokens.size == 628_457 and int((tokens == 1).sum()) == 200
