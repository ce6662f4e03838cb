"""Byte tables: the challenge's rule, known answers on the real tokenizers, refusals, sidecars,
and `golfeval bytes`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from golfeval.cli import main as golfeval_main
from golfeval.data.bytetables import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    USER_DEFINED,
    ByteTableError,
    ByteTables,
    crosscheck_documents,
    sidecar_target_bytes,
)
from golfeval.data.shards import write_shard

SP = "\u2581"
KNOWN_BYTES = 1_489_418  # sp1024 tables over every target of the 200 BOS-prefixed docs


def _pieces():
    return [("<pad>", CONTROL), ("<s>", CONTROL), ("</s>", CONTROL), ("<unk>", UNKNOWN),
            ("<0x41>", BYTE), (SP, NORMAL), (SP + "the", NORMAL), ("é", NORMAL),
            (SP + "€", NORMAL), ("ab", NORMAL)]


def test_rule_on_hand_made_pieces():
    t = ByteTables.from_pieces(_pieces())
    assert t.base_bytes.tolist() == [0, 0, 0, 0, 1, 0, 3, 2, 3, 2]
    assert t.has_leading_space.tolist() == [False] * 5 + [True, True, False, True, False]
    assert t.is_boundary.tolist() == [True] * 4 + [False] * 6
    #            BOS ▁the  ▁   é  ▁€  <0x41> BOS ▁the ab  </s> ▁the
    stream = np.array([1, 6, 5, 7, 8, 4, 1, 6, 9, 2, 6])
    # ▁the after BOS: no space; ▁ after ▁the: 1; BOS target: 0; ▁the after </s>: no space.
    assert t.target_bytes(stream).tolist() == [3, 1, 2, 4, 1, 0, 3, 2, 0, 3]
    assert t.target_bytes(stream).dtype == np.int64
    with pytest.raises(ByteTableError, match="outside the tokenizer"):
        t.target_bytes(np.array([1, 10]))


def test_refusals_on_hand_made_pieces():
    no_space = [p for p in _pieces() if p[0] != SP]
    with pytest.raises(ByteTableError, match="no standalone"):
        ByteTables.from_pieces(no_space)
    with pytest.raises(ByteTableError, match="non-leading"):
        ByteTables.from_pieces(_pieces() + [("a" + SP + "b", NORMAL)])
    user = _pieces() + [("<case>", USER_DEFINED)]
    with pytest.raises(ByteTableError, match="user-defined piece '<case>'.*sidecar"):
        ByteTables.from_pieces(user)
    allowed = ByteTables.from_pieces(user, allow_user_defined=True)
    assert allowed.user_defined.tolist()[-1] and allowed.summary()["user_defined"] == 1


def _train(tmp_path, name, texts, **kw):
    import sentencepiece as spm

    opts = dict(model_type="bpe", vocab_size=600, character_coverage=0.99, byte_fallback=True,
                split_digits=True, normalization_rule_name="nmt_nfkc", add_dummy_prefix=False,
                pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False, minloglevel=2,
                num_threads=1)
    opts.update(kw)
    prefix = tmp_path / name
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(prefix),
                                   **opts)
    return str(prefix) + ".model"


@pytest.fixture(scope="module")
def texts():
    from golfeval.data.corpus import pydoc_documents

    return pydoc_documents()[:60]


@pytest.mark.parametrize("case", ["no_space_piece", "inner_space", "user_defined"])
def test_refusals_on_trained_tokenizers(tmp_path, texts, case):
    if case == "no_space_piece":  # nothing to learn a ▁ from
        model = _train(tmp_path, case, ["".join(t.split()) for t in texts])
        match = "no standalone"
    elif case == "inner_space":  # pieces may span words
        model = _train(tmp_path, case, texts, split_by_whitespace=False)
        match = "non-leading"
    else:
        model = _train(tmp_path, case, texts, user_defined_symbols=["<upper>"])
        match = "user-defined piece '<upper>'"
    with pytest.raises(ByteTableError, match=match):
        ByteTables.from_tokenizer(model)
    r = CliRunner().invoke(golfeval_main, ["bytes", "--tokenizer", model, "--docs", "x.jsonl"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "error:" in r.output


def test_tiny_tokenizer_matches_its_text(tiny_tokenizer, pydoc_corpus):
    r = crosscheck_documents(tiny_tokenizer, pydoc_corpus, max_docs=40)
    assert r.documents == 40 and not r.mismatches
    assert r.table_bytes == r.normalized_bytes > 0


def test_known_answer_sp1024(shared_data, tmp_path):
    """The 200 real docs, BOS-prefixed, through `golfeval data build`: 1,489,418 bytes."""
    from golfeval.data.build import build
    from golfeval.data.shards import load_tokens

    tok = shared_data / "fineweb_1024_bpe.model"
    build(tok, shared_data / "fineweb_val_200docs.jsonl", tmp_path, val_docs=200)
    tokens = load_tokens(tmp_path, "val")
    assert tokens.size == 628_457
    tb = ByteTables.from_tokenizer(tok).target_bytes(tokens)
    assert tb.size == 628_456 and int(tb.sum()) == KNOWN_BYTES


@pytest.mark.parametrize("vocab", [1024, 8192])
def test_bytes_cli_known_answer(shared_data, vocab):
    """Tokenizer-agnostic: both real tokenizers give the same bytes, equal to the text."""
    tok = shared_data / f"fineweb_{vocab}_bpe.model"
    r = CliRunner().invoke(golfeval_main, [
        "bytes", "--tokenizer", str(tok), "--docs",
        str(shared_data / "fineweb_val_200docs.jsonl"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["documents"] == 200 and rep["mismatched_documents"] == 0
    assert rep["table_bytes"] == rep["normalized_bytes"] == KNOWN_BYTES
    assert rep["raw_bytes"] == 1_489_515
    if vocab == 1024:
        assert rep["tokens"] == 628_457


def test_bytes_cli_reports_mismatch(tmp_path, tiny_tokenizer, monkeypatch):
    """A miscounting table is caught: exit 1 and the document listed."""
    docs = tmp_path / "d.jsonl"
    docs.write_text(json.dumps({"text": "hello world"}) + "\n"
                    + json.dumps({"text": "plain"}) + "\n")
    real = ByteTables.from_pieces

    def off_by_one(*a, **k):
        t = real(*a, **k)
        t.base_bytes = t.base_bytes + (t.has_leading_space & (t.base_bytes > 0))
        return t

    monkeypatch.setattr(ByteTables, "from_pieces", off_by_one)
    r = CliRunner().invoke(golfeval_main, ["bytes", "--tokenizer", str(tiny_tokenizer),
                                           "--docs", str(docs)])
    assert r.exit_code == 1
    assert "line 1: tables" in r.output and "line 2" not in r.output


def test_sidecar_target_bytes(tmp_path):
    a, b = tmp_path / "fineweb_val_bytes_000000.bin", tmp_path / "fineweb_val_bytes_000001.bin"
    write_shard(a, [0, 3, 1, 4])
    write_shard(b, [0, 5, 9])
    assert sidecar_target_bytes([a, b], 7).tolist() == [3, 1, 4, 0, 5, 9]
    assert sidecar_target_bytes([a, b], 3).tolist() == [3, 1]
    with pytest.raises(ByteTableError, match="hold 7 entries"):
        sidecar_target_bytes([a, b], 8)
