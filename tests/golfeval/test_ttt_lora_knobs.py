"""The LoRA TTT knobs the records tune: alpha/rank scale, Adam/AdamW with weight decay, grad
steps per chunk, warm-started A (only B reset, stream-order batches), the MLP adapter, the
document order; and freezing the first blocks in SGD TTT. Each knob keeps the first chunk of
a document on the bare model and stays causal."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from golfeval.audit.causality import AuditConfig, build_mode, run_audit
from golfeval.data.shards import load_tokens
from golfeval.ttt.lora import LoraSettings, document_batches, evaluate_lora, split_documents
from golfeval.ttt.settings import make_settings
from golfeval.ttt.sgd import SGDSettings, evaluate_sgd
from golfpack.errors import GolfError

S = LoraSettings(rank=4, chunk=32, context=64, batch=2)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stream(tiny_shards):
    t = load_tokens(tiny_shards, "val")[:20000].astype(np.int64)
    starts, n = split_documents(t)
    return np.concatenate([t[a: a + min(int(k), 100)] for a, k in
                           zip(starts[:4], n[:4], strict=True)])


@pytest.fixture(scope="module")
def base(model, tables, stream):
    return _run(model, tables, stream, S)


def _run(model, tables, stream, s):
    return evaluate_lora(model, stream, tables.target_bytes(stream), s, per_token=True)


def _first_chunks(stream, chunk):
    starts, _ = split_documents(stream)
    return np.concatenate([np.arange(a, a + chunk) for a in starts])


@pytest.mark.parametrize("change", [
    dict(alpha=8.0), dict(optimizer="adamw", weight_decay=0.1), dict(weight_decay=0.1),
    dict(grad_steps=2), dict(targets=("q", "mlp", "head")), dict(targets=("k", "o", "up", "down")),
    dict(beta1=0.0, beta2=0.999),
])
def test_each_knob_changes_adaptation_but_not_first_chunks(model, tables, stream, base, change):
    r = _run(model, tables, stream, replace(S, **change))
    assert r.scored_tokens == base.scored_tokens and r.bytes_sum == base.bytes_sum
    first = _first_chunks(stream, S.chunk)
    np.testing.assert_array_equal(r.per_token_nats[first], base.per_token_nats[first])
    assert r.nats_sum != base.nats_sum


def test_neutral_settings_reproduce_the_default_bit_for_bit(model, tables, stream, base):
    same = _run(model, tables, stream, replace(S, alpha=4.0, optimizer="adam",
                                               weight_decay=0.0, grad_steps=1))
    np.testing.assert_array_equal(same.per_token_nats, base.per_token_nats)
    assert S.to_dict()["scale"] == 1.0 and replace(S, alpha=8.0).scale == 2.0


def test_warm_a_carries_a_in_stream_order_and_stays_causal(model, tables, stream, base):
    warm = replace(S, warm_a=True, batch=1)
    assert not warm.sorted_by_length
    r = _run(model, tables, stream, warm)
    starts, n = split_documents(stream)
    doc0 = slice(0, int(n[0]))
    # document 0 starts from the seeded A like the fresh run; later ones start from a
    # trained A, so their scores (after the bare first chunk) differ
    np.testing.assert_array_equal(r.per_token_nats[doc0], base.per_token_nats[doc0])
    first = _first_chunks(stream, S.chunk)
    np.testing.assert_array_equal(r.per_token_nats[first], base.per_token_nats[first])
    assert r.nats_sum != base.nats_sum
    mode = build_mode("lora", model, AuditConfig(seq_len=64, ttt=warm))
    report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=3)
    assert report.passed, report.to_dict()
    with pytest.raises(GolfError, match="stream order"):
        replace(S, warm_a=True, sort_docs=True)


def test_document_batches_sorted_or_in_stream_order():
    ntargets = np.array([10, 50, 30, 50])
    s = LoraSettings(chunk=10, context=20, batch=2)
    assert [b.tolist() for b in document_batches(np.arange(4), ntargets, s)] == [[1, 3], [2, 0]]
    s = replace(s, sort_docs=False)
    assert [b.tolist() for b in document_batches(np.arange(4), ntargets, s)] == [[0, 1], [2, 3]]


def test_options_reach_the_settings_and_the_report():
    s = make_settings("lora", seq_len=64, alpha=16.0, optimizer="adamw", beta1=0.0, eps=1e-10,
                      weight_decay=0.5, grad_steps=2, warm_a=True, docs_per_batch=8,
                      targets="q,k,v,o,mlp,head", rank=8, chunk=16)
    d = s.to_dict()
    assert (d["alpha"], d["scale"], d["optimizer"], d["beta1"], d["weight_decay"]) == \
        (16.0, 2.0, "adamw", 0.0, 0.5)
    assert (d["grad_steps"], d["warm_a"], d["batch"], d["sort_docs"]) == (2, True, 8, False)
    assert d["eps"] == 1e-10
    assert d["targets"] == ["q", "k", "v", "o", "mlp", "head"]
    with pytest.raises(GolfError):
        make_settings("lora", optimizer="sgd")
    with pytest.raises(GolfError):
        make_settings("lora", freeze_blocks=1)
    assert make_settings("sgd", freeze_blocks=1).freeze_blocks == 1


def test_sgd_freeze_blocks_changes_training_and_restores_weights(model, tables, stream):
    s = SGDSettings(chunk_tokens=128, seq_len=32, stride=16, train_batch=4, lr=0.05,
                    score_batch=4, epochs=1)
    tb = tables.target_bytes(stream)
    free = evaluate_sgd(model, stream, tb, s)
    frozen = evaluate_sgd(model, stream, tb, replace(s, freeze_blocks=1))
    assert frozen.scored_tokens == free.scored_tokens
    assert frozen.nats_sum != free.nats_sum
    with pytest.raises(GolfError):
        evaluate_sgd(model, stream, tb, replace(s, freeze_blocks=5))
