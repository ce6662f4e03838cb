"""The leak checks, each caught on a deliberately leaky tiny model or mode: a hashed n-gram
mixture that does not normalize, a model whose state at s reads token s+1 (its own target:
the prefix audit passes it), a smear gate that carries the last token of one document
into the next; honest controls pass. And `--mode` of a plugin module named on the CLI."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from golfeval.audit.causality import MODES, AuditConfig, AuditMode, build_mode, run_audit
from golfeval.audit.checks import (
    NORM_TOL,
    check_doc_isolation,
    check_normalization,
    check_target_independence,
)
from golfeval.cli import main
from golfeval.data.shards import load_tokens
from golfeval.score.core import ScoreResult, score_tokens
from golfeval.ttt.lora import split_documents

SEQ = 32
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stream(tiny_shards):
    """Three documents (40, 30 and 60 tokens), BOS-separated."""
    t = load_tokens(tiny_shards, "val")[:2400].astype(np.int64)
    starts, _ = split_documents(t)
    return np.concatenate([t[starts[0]:starts[0] + 40], t[starts[1]:starts[1] + 30],
                           t[starts[2]:starts[2] + 60]])


class LookAhead(torch.nn.Module):
    """Logits at s get a bonus for token s+1 of the window: reads its own target."""

    def __init__(self, base, vocab):
        super().__init__()
        self.base, self.vocab = base, vocab

    def forward(self, idx, attn_mask=None):
        logits = self.base(idx, attn_mask).clone()
        nxt = torch.nn.functional.one_hot(idx[:, 1:], logits.size(-1)).to(logits.dtype)
        logits[:, :-1] += 3.0 * nxt
        return logits


class Smear(torch.nn.Module):
    """A previous-token term on the logits (a smear gate); `leaky` keeps it on at BOS."""

    def __init__(self, base, vocab, leaky=True, bos_id=1):
        super().__init__()
        self.base, self.leaky, self.bos_id = base, leaky, bos_id
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(vocab, vocab, generator=g) * 0.5

    def forward(self, idx, attn_mask=None):
        logits = self.base(idx, attn_mask).clone()
        prev = self.table[idx[:, :-1]]
        if not self.leaky:
            prev = prev * (idx[:, 1:] != self.bos_id)[..., None]
        logits[:, 1:] += prev
        return logits


def _ngram_mode(model, vocab, hashed: bool):
    """Flat scores mixed half-half with a bigram count model of the past (causal). The
    hashed variant looks counts up in 64 buckets per previous token: collisions make its
    probabilities sum to ~vocab/64 over the vocabulary."""
    def evaluate(tokens, tb):
        base = score_tokens(model, tokens, tb, mode="flat", seq_len=SEQ, batch=4,
                            per_token=True)
        nats = base.per_token_nats.copy()
        counts: dict = {}
        for t in range(tokens.size - 1):
            prev, nxt = int(tokens[t]), int(tokens[t + 1])
            key = (prev, (prev * 31 + nxt) % 64) if hashed else (prev, nxt)
            tot = counts.get(prev, 0)
            q = (counts.get(key, 0) + 1) / (tot + (64 if hashed else vocab))
            if not np.isnan(nats[t]):
                nats[t] = -np.log(0.5 * np.exp(-nats[t]) + 0.5 * q)
            counts[key] = counts.get(key, 0) + 1
            counts[prev] = tot + 1
        scored = ~np.isnan(nats)
        return ScoreResult.from_sums(float(nats[scored].sum()), int(tb[scored].sum()),
                                     int(scored.sum()), 0.0, per_token_nats=nats,
                                     n_targets=tokens.size - 1)

    return AuditMode("hashed-ngram" if hashed else "bigram", evaluate,
                     lambda n: (max(0, n - 1) // SEQ) * SEQ)


def test_honest_flat_and_sliding_pass_every_leak_check(model, tables, stream):
    for name, sweeps in (("flat", 1), ("sliding", None)):  # None: distributions only
        mode = build_mode(name, model, AuditConfig(seq_len=SEQ, stride=8, batch=4,
                                                   doc_isolation=True))
        report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=3,
                           leaks=True, sweeps=sweeps, check_len=SEQ)
        assert report.passed, report.to_dict()
        names = [c.name for c in report.checks[-3:]]
        assert names == ["normalization", "target independence", "document isolation"]
        assert not any(c.skipped for c in report.checks)


def test_hashed_ngram_mixture_fails_normalization(model, tables, stream):
    bad = _ngram_mode(model, tables.vocab_size, hashed=True)
    c = check_normalization(bad, stream, tables.target_bytes, tables.vocab_size, positions=1,
                            sweep_tokens=SEQ + 1)
    assert not c.ok and c.position is not None and 1 <= c.position <= SEQ
    assert "candidate sweep" in c.detail
    # the prefix audit cannot see it: the mixture only reads the past
    assert run_audit(bad, stream, tables.target_bytes, tables.vocab_size, positions=3).passed
    good = _ngram_mode(model, tables.vocab_size, hashed=False)
    c = check_normalization(good, stream, tables.target_bytes, tables.vocab_size, positions=1,
                            sweep_tokens=SEQ + 1)
    assert c.ok, c.detail
    assert f"<= {NORM_TOL:g}" in c.detail


def test_model_reading_its_target_passes_prefix_audit_but_not_target_independence(
        model, tables, stream):
    leaky = LookAhead(model, tables.vocab_size)
    mode = build_mode("flat", leaky, AuditConfig(seq_len=SEQ, batch=4))
    report = run_audit(mode, stream, tables.target_bytes, tables.vocab_size, positions=4)
    assert report.passed  # today's audit: every cut keeps the target it compares
    c = check_target_independence(mode, stream, tables.vocab_size, positions=4,
                                  max_tokens=2 * SEQ + 1)
    assert not c.ok and c.position is not None
    assert "its own target" in c.detail
    n = check_normalization(mode, stream, tables.target_bytes, tables.vocab_size,
                            positions=1, sweep_tokens=SEQ + 1, dist_tokens=2 * SEQ + 1)
    assert not n.ok  # the sweep sees the same leak: probabilities sum above 1
    honest = build_mode("flat", model, AuditConfig(seq_len=SEQ, batch=4))
    assert check_target_independence(honest, stream, tables.vocab_size, positions=4,
                                     max_tokens=2 * SEQ + 1).ok


def test_smear_gate_bos_leak_fails_document_isolation(model, tables, stream):
    bos = np.flatnonzero(stream == 1)
    cfg = AuditConfig(seq_len=SEQ, stride=8, batch=4, doc_isolation=True)
    leaky = build_mode("sliding", Smear(model, tables.vocab_size), cfg)
    c = check_doc_isolation(leaky, stream, tables.target_bytes, tables.vocab_size)
    assert not c.ok
    assert c.position == int(bos[bos >= 2][0]) + 1  # the first token after the BOS
    # attention isolation alone passes the prefix audit and target independence
    assert run_audit(leaky, stream, tables.target_bytes, tables.vocab_size, positions=3).passed
    fixed = build_mode("sliding", Smear(model, tables.vocab_size, leaky=False), cfg)
    assert check_doc_isolation(fixed, stream, tables.target_bytes, tables.vocab_size).ok
    # without attention isolation the honest model is not isolated either
    open_attn = build_mode("flat", model, AuditConfig(seq_len=SEQ, batch=4))
    assert not check_doc_isolation(open_attn, stream, tables.target_bytes,
                                   tables.vocab_size).ok


def test_lora_claims_isolation_and_keeps_it(model, tables, stream):
    from golfeval.ttt.lora import LoraSettings

    mode = build_mode("lora", model, AuditConfig(ttt=LoraSettings(rank=2, chunk=16,
                                                                  context=SEQ, batch=1)))
    assert mode.doc_isolated
    c = check_doc_isolation(mode, stream, tables.target_bytes, tables.vocab_size)
    assert c.ok, c.detail


PLUGIN = '''
import numpy as np
from golfeval.audit.causality import AuditMode, register
from golfeval.score.core import score_tokens


@register("plugin-flat-minus")
def _factory(model, cfg):
    def evaluate(tokens, tb):
        r = score_tokens(model, tokens, tb, mode="flat", seq_len=cfg.seq_len, batch=cfg.batch,
                         per_token=True)
        r.per_token_nats = r.per_token_nats - 0.25  # not a distribution any more
        r.nats_sum = float(np.nansum(r.per_token_nats))
        return r
    return AuditMode("plugin-flat-minus", evaluate,
                     lambda n: (max(0, n - 1) // cfg.seq_len) * cfg.seq_len)
'''


def test_cli_mode_from_a_plugin_module(tmp_path, tiny_shards, tiny_tokenizer, monkeypatch):
    from tinymodels import saved_gpt

    ck = saved_gpt(tmp_path / "m.safetensors")
    (tmp_path / "golf_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    base = ["audit", "--checkpoint", str(ck), "--data", str(tiny_shards), "--tokenizer",
            str(tiny_tokenizer), "--seq-len", str(SEQ), "--max-tokens", "200",
            "--positions", "2", "--json"]
    try:
        out = CliRunner().invoke(main, base + ["--mode", "plugin-flat-minus"])
        assert out.exit_code == 2 and "unknown audit mode" in out.output
        out = CliRunner().invoke(main, base + ["--mode", "plugin-flat-minus", "--plugin",
                                               "golf_test_plugin"])
        assert out.exit_code == 1, out.output
        doc = json.loads(out.stdout)
        norm = next(c for c in doc["checks"] if c["name"] == "normalization")
        assert not norm["ok"] and norm["position"] is not None
        out = CliRunner().invoke(main, base + ["--mode", "flat", "--plugin", "no_such_mod_x"])
        assert out.exit_code == 2 and "no_such_mod_x" in out.output
    finally:
        MODES.pop("plugin-flat-minus", None)
        sys.modules.pop("golf_test_plugin", None)


def test_plugin_from_a_py_file_and_a_missing_one(tmp_path):
    from golfeval.audit.causality import check_mode, load_plugin
    from golfpack.errors import GolfError

    path = tmp_path / "golf_file_plugin.py"
    path.write_text(textwrap.dedent(PLUGIN).replace("plugin-flat-minus", "file-plugin-mode"))
    try:
        load_plugin(str(path))
        check_mode("file-plugin-mode")
    finally:
        MODES.pop("file-plugin-mode", None)
        sys.modules.pop("golf_file_plugin", None)
    with pytest.raises(GolfError, match="no such file"):
        load_plugin(str(tmp_path / "absent.py"))
