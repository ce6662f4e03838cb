"""The causality audit: every built-in mode passes bit for bit on a tiny model; the leaky
variants (adapt on a chunk before scoring it) fail at the chunk's first token; the coverage
and byte checks catch double counting and wrong bytes; new modes plug in by name."""

from __future__ import annotations

import numpy as np
import pytest

from golfeval.audit.causality import (
    MODES,
    AuditConfig,
    AuditMode,
    build_mode,
    choose_cuts,
    register,
    run_audit,
)
from golfeval.data.shards import load_tokens
from golfeval.score.core import ScoreResult
from golfeval.ttt.lora import LoraSettings, evaluate_lora, split_documents
from golfeval.ttt.sgd import SGDSettings, chunk_lr, evaluate_sgd
from golfpack.errors import GolfError

LORA = LoraSettings(rank=4, chunk=64, context=128, batch=3)
SGD = SGDSettings(chunk_tokens=300, seq_len=64, stride=16, train_batch=4, lr=0.05,
                  score_batch=8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stream(tiny_shards):
    # two short documents then a long one: document and chunk boundaries both occur
    t = load_tokens(tiny_shards, "val")[:2400].astype(np.int64)
    starts, n = split_documents(t)
    return np.concatenate([t[starts[0]:starts[0] + 90], t[starts[1]:starts[1] + 60],
                           t[starts[2]:starts[2] + 650]])


@pytest.mark.parametrize("name", ["flat", "sliding", "lora", "sgd"])
def test_every_mode_is_causal_bit_for_bit(model, tables, stream, name):
    ttt = {"lora": LORA, "sgd": SGD}.get(name)
    mode = build_mode(name, model, AuditConfig(seq_len=64, stride=16, batch=3, ttt=ttt))
    report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=5)
    assert report.passed, report.to_dict()
    assert len(report.cuts) == 5
    assert {c.source for c in report.cuts} == {"boundary", "document", "random"}
    assert all(c.max_abs_diff == 0 for c in report.cuts)
    expect = (stream.size - 1) // 64 * 64 if name == "flat" else stream.size - 1
    assert report.scored == expect
    assert [c.ok for c in report.checks] == [True, True, True]


def _leaky_lora_loop(batch, ledger, tally, key):
    """Adapt on each chunk, then score it: the chunk's own targets leak into its scores."""
    for c in range(batch.steps):
        if batch.trains(c).any():
            batch.step(c, batch.forward(c))
        tally.add(batch, c, batch.forward(c))


def _leaky_sgd_loop(plans, ledger, score, trainer, s):
    """Train on each chunk, then score it."""
    for k, plan in enumerate(plans):
        a, e = int(plan.starts[0] + plan.offsets[0]), int(plan.starts[-1] + plan.lengths[-1])
        if k < len(plans) - 1:
            trainer.train(a, e, chunk_lr(s, k, len(plans)))
        yield k, score(plan)


def test_leaky_lora_is_caught_at_the_chunks_first_token(model, tables, stream):
    # one document per batch: a leaky step also moves the adapters of batch-mates that
    # are on their last chunk, which would add (real, but harder to predict) violations
    one = LoraSettings(rank=4, chunk=64, context=128, batch=1)
    mode = AuditMode("leaky-lora", lambda t, tb: evaluate_lora(
        model, t, tb, one, per_token=True, _loop=_leaky_lora_loop))
    report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=4,
                       seed=3)
    starts, n = split_documents(stream)
    chunks = [int(a) + k * one.chunk for a, n_ in zip(starts, n, strict=True)
              for k in range(-(-int(n_) // one.chunk))]
    _check_leak_positions(report, chunks)


def _check_leak_positions(report, chunk_starts):
    """A leaky variant changes the losses of the chunk holding the first randomised target
    (if that chunk is trained in the stream or in the copy; a random BOS in the suffix can
    end the copy's document early), so a cut fails exactly at that chunk's first token."""
    assert not report.passed
    caught = 0
    for cut in report.cuts:
        first = max(c for c in chunk_starts if c <= cut.cut)
        if first == cut.cut:  # cut on a chunk boundary: nothing kept is in a later chunk
            assert cut.ok, cut
        else:
            assert cut.first_violation in (None, first + 1), cut
            caught += cut.first_violation == first + 1
    assert caught >= 1
    assert report.first_violation == min(c.first_violation for c in report.cuts
                                         if c.first_violation)


def test_leaky_sgd_is_caught_at_the_chunks_first_token(model, tables, stream):
    mode = AuditMode("leaky-sgd", lambda t, tb: evaluate_sgd(
        model, t, tb, SGD, per_token=True, _loop=_leaky_sgd_loop))
    report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=3,
                       seed=1)
    _check_leak_positions(report, list(range(0, stream.size - 1, SGD.chunk_tokens)))


def _unigram(peek: bool):
    """A toy plug-in mode: add-one unigram counts of the tokens seen so far (causal), or
    of the whole stream (peek: not causal)."""
    def evaluate(tokens, tb):
        v = 512
        counts = np.ones(v)
        if peek:
            np.add.at(counts, tokens, 1)
        nats = np.empty(tokens.size - 1)
        for i in range(tokens.size - 1):
            if not peek:
                counts[tokens[i]] += 1
            nats[i] = np.log(counts.sum()) - np.log(counts[tokens[i + 1]])
        return ScoreResult.from_sums(float(nats.sum()), int(tb.sum()), nats.size, 0.0,
                                     per_token_nats=nats, n_targets=nats.size)
    return evaluate


def test_plug_in_modes_by_name(tables, stream):
    register("unigram")(lambda model, cfg: AuditMode("unigram", _unigram(False)))
    register("unigram-peek")(lambda model, cfg: AuditMode("unigram-peek", _unigram(True)))
    try:
        short = stream[:300]
        good = run_audit(build_mode("unigram", None, AuditConfig()), short,
                         tables.target_bytes, tables.vocab_size, positions=3)
        bad = run_audit(build_mode("unigram-peek", None, AuditConfig()), short,
                        tables.target_bytes, tables.vocab_size, positions=3)
        assert good.passed and not bad.passed and 1 <= bad.first_violation <= 3  # at once
    finally:
        del MODES["unigram"], MODES["unigram-peek"]
    with pytest.raises(GolfError, match="unknown audit mode"):
        build_mode("nope", None, AuditConfig())


def test_accounting_checks_catch_double_counting_and_wrong_bytes(tables, stream):
    honest = _unigram(False)

    def double(tokens, tb):
        r = honest(tokens, tb)
        return ScoreResult.from_sums(r.nats_sum + r.per_token_nats[5], r.bytes_sum + int(tb[5]),
                                     r.scored_tokens + 1, 0.0, per_token_nats=r.per_token_nats)

    def bytes_off(tokens, tb):
        r = honest(tokens, tb)
        return ScoreResult.from_sums(r.nats_sum, r.bytes_sum + 3, r.scored_tokens, 0.0,
                                     per_token_nats=r.per_token_nats)

    short = stream[:200]
    rep = run_audit(AuditMode("double", double), short, tables.target_bytes,
                    tables.vocab_size, positions=1)
    assert {c.name: c.ok for c in rep.checks}["stream coverage"] is False
    assert {c.name: c.ok for c in rep.checks}["stream nats"] is False
    rep = run_audit(AuditMode("bytes", bytes_off), short, tables.target_bytes,
                    tables.vocab_size, positions=1)
    assert {c.name: c.ok for c in rep.checks}["stream bytes"] is False
    assert not rep.passed and rep.first_violation is None


def test_cut_choice():
    rng = np.random.default_rng(0)
    cuts = choose_cuts(1000, [0, 100, 500, 999], 6, rng)
    pos = [c for c, _ in cuts]
    assert pos == sorted(set(pos)) and len(pos) == 6
    assert all(1 <= c <= 998 for c in pos)
    assert sum(s == "boundary" for _, s in cuts) == 3
    assert {99, 100, 101} & set(pos) or {499, 500, 501} & set(pos)
    # a document start inside the stream is always cut, whatever the mode's boundaries
    cuts = choose_cuts(1000, range(64, 1000, 64), 4, rng, documents=[0, 700])
    assert [s for _, s in cuts].count("document") == 1
    assert {699, 700, 701} & {c for c, s in cuts if s == "document"}
    assert choose_cuts(2, [], 4, rng) == []
    assert len(choose_cuts(5, [], 10, rng)) == 3  # only 1..3 exist
