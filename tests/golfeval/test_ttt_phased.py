"""Phased TTT on a tiny model: phase boundaries, the first segment is plain LoRA TTT bit for
bit, later segments see the trained base, results do not depend on the documents per
forward, the weights come back, the causality audit passes bitwise, and a leaky variant
(a global step on documents before they are scored) is caught by the audit and the ledger."""

from __future__ import annotations

import numpy as np
import pytest

from golfeval.audit.causality import AuditConfig, AuditMode, build_mode, run_audit
from golfeval.data.shards import load_tokens
from golfeval.ttt.fingerprint import LegalityError, fingerprint, state_tensors
from golfeval.ttt.lora import LoraSettings, evaluate_lora, split_documents
from golfeval.ttt.phased import (
    PhasedSettings,
    PhaseSGD,
    evaluate_phased,
    phase_boundaries,
)
from golfeval.ttt.settings import make_settings
from golfeval.ttt.sgd import trainable_params
from golfpack.errors import GolfError

LORA = LoraSettings(rank=4, chunk=32, context=64, batch=3)
SGD = (PhaseSGD(lr=0.05, momentum=0.9, epochs=1),)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stream(tiny_shards):
    """Six short documents (so phase boundaries fall inside the stream)."""
    t = load_tokens(tiny_shards, "val")[:20000].astype(np.int64)
    starts, n = split_documents(t)
    keep = [t[a: a + min(int(k), 70 + 15 * i)] for i, (a, k) in
            enumerate(zip(starts[:6], n[:6], strict=True))]
    return np.concatenate(keep)


def _settings(phases=(2, 4), **kw):
    return PhasedSettings(lora=LORA, phases=phases, sgd=SGD, seq_len=32, train_batch=4,
                          leaf=2, **kw)


def _run(model, stream, tables, settings, **kw):
    return evaluate_phased(model, stream, tables.target_bytes(stream), settings,
                           per_token=True, **kw)


def test_phase_boundaries_counts_fractions_and_dropping():
    assert phase_boundaries(10, (2, 5)) == [2, 5]
    assert phase_boundaries(10, (0.25, 0.5)) == [2, 5]
    assert phase_boundaries(10, (5, 10, 20)) == [5]      # nothing to score after 10
    assert phase_boundaries(3, (833, 1666, 2500)) == []
    with pytest.raises(GolfError):
        phase_boundaries(10, (5, 2))
    with pytest.raises(GolfError):
        PhasedSettings(phases=(1.5,))
    with pytest.raises(GolfError):
        PhasedSettings(phases=(2, 4), sgd=(PhaseSGD(),) * 3)


def test_make_settings_reads_lists_per_phase():
    s = make_settings("phased", seq_len=64, phases="10,0.5", phase_lr="0.01,0.02",
                      phase_epochs="2", freeze_blocks=1, rank=4, chunk=16)
    assert s.phases == (10, 0.5)
    assert [p.lr for p in s.sgd] == [0.01, 0.02]
    assert [p.epochs for p in s.sgd] == [2, 2] and s.sgd[0].freeze_blocks == 1
    assert s.lora.rank == 4 and s.lora.context == 64
    with pytest.raises(GolfError):
        make_settings("phased", phases="1,2", phase_lr="0.1,0.2,0.3")
    with pytest.raises(GolfError):
        make_settings("lora", phases="1,2")


@pytest.mark.slow
def test_first_segment_is_lora_ttt_and_later_ones_see_the_trained_base(model, tables, stream):
    starts, n = split_documents(stream)
    assert starts.size == 6
    lora = evaluate_lora(model, stream, tables.target_bytes(stream), LORA, per_token=True)
    records = []
    phased = _run(model, stream, tables, _settings(), on_phase=records.append)
    assert phased.scored_tokens == stream.size - 1 == lora.scored_tokens
    assert phased.bytes_sum == lora.bytes_sum
    first = int(starts[2])                         # targets of documents 0 and 1
    np.testing.assert_array_equal(phased.per_token_nats[:first], lora.per_token_nats[:first])
    assert not np.array_equal(phased.per_token_nats[first:], lora.per_token_nats[first:])
    assert [(r.documents, r.end) for r in records] == [(2, first), (4, int(starts[4]))]
    assert all(r.steps >= 1 for r in records)
    # no boundary inside the stream: exactly LoRA TTT
    none = _run(model, stream, tables, _settings(phases=(50,)))
    np.testing.assert_array_equal(none.per_token_nats, lora.per_token_nats)
    assert none.nats_sum == lora.nats_sum


def test_documents_per_forward_never_change_results(model, tables, stream):
    runs = [_run(model, stream, tables, PhasedSettings(
        lora=LoraSettings(rank=4, chunk=32, context=64, batch=b), phases=(2, 4), sgd=SGD,
        seq_len=32, train_batch=4, leaf=2)) for b in (1, 4)]
    np.testing.assert_array_equal(runs[0].per_token_nats, runs[1].per_token_nats)
    assert runs[0].nats_sum == runs[1].nats_sum


def test_weights_come_back_and_frozen_blocks_stay(model, tables, stream):
    before = fingerprint(state_tensors(model))
    frozen = _run(model, stream, tables, PhasedSettings(
        lora=LORA, phases=(3,), sgd=(PhaseSGD(lr=0.05, freeze_blocks=2),), seq_len=32,
        train_batch=4, leaf=2))
    assert fingerprint(state_tensors(model)) == before
    assert all(not p.requires_grad for p in model.parameters())
    # both blocks frozen: only embeddings/skips train, so results differ from no freezing
    free = _run(model, stream, tables, PhasedSettings(lora=LORA, phases=(3,), sgd=SGD,
                                                       seq_len=32, train_batch=4, leaf=2))
    assert frozen.nats_sum != free.nats_sum
    n_all = len(trainable_params(model))
    assert len(trainable_params(model, 1)) < n_all
    with pytest.raises(GolfError):
        trainable_params(model, 3)


def test_a_later_phase_never_reaches_earlier_documents(model, tables, stream):
    starts, _ = split_documents(stream)
    two = _run(model, stream, tables, _settings(phases=(2, 4)))
    one = _run(model, stream, tables, _settings(phases=(2,)))
    cut = int(starts[4])            # documents 0-3: scored before phase 2 exists
    np.testing.assert_array_equal(two.per_token_nats[:cut], one.per_token_nats[:cut])
    assert not np.array_equal(two.per_token_nats[cut:], one.per_token_nats[cut:])


@pytest.mark.slow
def test_audit_passes_bitwise(model, tables, stream):
    mode = build_mode("phased", model, AuditConfig(seq_len=64, batch=3, ttt=_settings()))
    report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=5)
    assert report.passed, report.to_dict()
    assert all(c.max_abs_diff == 0 for c in report.cuts)
    assert report.scored == stream.size - 1


def _leaky_loop(run):
    """Train each phase on its segment's documents before scoring them (a global step on
    documents not yet scored), then score."""
    for k, (_a, e) in enumerate(run.segments()):
        if k < len(run.bounds):
            run.train_phase(k, run.prefix_end(e))
        run.score_segment(k)


@pytest.mark.slow
def test_leaky_phased_is_caught_by_the_audit(model, tables, stream):
    s = _settings(phases=(3,))
    starts, _ = split_documents(stream)
    inside = [int(starts[1]) + 20, int(starts[2]) + 10]      # in segment 0 (documents 0-2)
    mode = AuditMode("leaky-phased", lambda t, tb: evaluate_phased(
        model, t, tb, s, per_token=True, _loop=_leaky_loop), boundaries=lambda t: inside)
    report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=4)
    assert not report.passed
    seg1 = int(starts[3])           # the first target the leaky phase did not train on
    assert any(c.cut < seg1 for c in report.cuts) and any(c.cut >= seg1 for c in report.cuts)
    for c in report.cuts:
        # training on documents 0-2 before scoring them moves the base that scores
        # document 0's first token; cuts after them keep everything the phase read
        assert (c.ok, c.first_violation) == ((False, 1) if c.cut < seg1 else (True, None)), c
    good = build_mode("phased", model, AuditConfig(seq_len=64, ttt=s))
    ok = run_audit(AuditMode("phased", good.evaluate, boundaries=lambda t: inside), stream,
                   tables.target_bytes, tables.vocab_size, positions=4)
    assert ok.passed, ok.to_dict()


def test_the_ledger_refuses_a_phase_before_its_documents_are_scored(model, tables, stream):
    def early(run):
        with run.ledger.adapting(("segment", 0)):
            run.train_phase(0, run.prefix_end(run.bounds[0]))

    before = fingerprint(state_tensors(model))
    with pytest.raises(LegalityError, match="adapted on before it was scored"):
        evaluate_phased(model, stream, tables.target_bytes(stream), _settings(), _loop=early)
    assert fingerprint(state_tensors(model)) == before      # restored even so
