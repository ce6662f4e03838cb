"""Scheme specs: parsing, first-match resolution, passthrough policy, clear errors."""

from __future__ import annotations

import pytest

from golfpack.quant.rows import Scheme, SchemeError, parse_scheme
from golfpack.quant.scheme import DEFAULT_SPEC, effective_rules, family, match_names, resolve

TENSORS = {
    "tok_emb.weight": ("float32", 1024 * 512),
    "skip_weights": ("float32", 5 * 512),
    "blocks.0.attn_scale": ("float32", 512),
    "blocks.0.attn.q_gain": ("float32", 8),
    "blocks.0.attn.c_q.weight": ("float32", 512 * 512),
    "blocks.0.mlp.fc.weight": ("float32", 1536 * 512),
    "blocks.10.mlp.proj.weight": ("float32", 512 * 1536),
    "small.weight": ("float32", 4096),
    "step": ("int64", 1),
}


def test_default_spec_matches_the_records():
    s = resolve(None, TENSORS)
    assert s["tok_emb.weight"] == parse_scheme("int8:gptq-lite")
    assert s["blocks.0.mlp.fc.weight"] == parse_scheme("int6:gptq-lite")
    assert s["blocks.0.attn_scale"] == Scheme("fp32")
    assert s["blocks.0.attn.q_gain"] == Scheme("fp32")
    assert s["skip_weights"] == Scheme("fp32")
    assert s["small.weight"] == Scheme("fp16")
    assert s["step"] == Scheme("raw")
    assert resolve(DEFAULT_SPEC, TENSORS) == s


def test_user_rules_first_match_and_defaults_after():
    s = resolve("tok_emb=int8:sdclip(20);*.mlp.*=int5:gptq-lite", TENSORS)
    assert s["tok_emb.weight"] == parse_scheme("int8:sdclip(20)")
    assert s["blocks.0.mlp.fc.weight"] == parse_scheme("int5:gptq-lite")
    assert s["blocks.10.mlp.proj.weight"] == parse_scheme("int5:gptq-lite")
    assert s["blocks.0.attn.c_q.weight"] == parse_scheme("int6:gptq-lite")  # default catch-all
    assert s["blocks.0.attn_scale"] == Scheme("fp32")  # default passthrough kept


def test_own_selectors_replace_the_passthrough_defaults():
    s = resolve("@control=fp16;@small(100)=fp32;*=int8", TENSORS)
    assert s["blocks.0.attn_scale"] == Scheme("fp16")
    assert s["blocks.0.attn.q_gain"] == Scheme("fp16")
    assert s["small.weight"] == parse_scheme("int8")  # 4096 > 100
    assert s["step"] == Scheme("raw")  # non-float is always exact


def test_pattern_matching_nothing_is_an_error():
    with pytest.raises(SchemeError, match=r"blocks\.\*\.mlpx.*match no tensor"):
        resolve("blocks.*.mlpx.*=int5", TENSORS)


@pytest.mark.parametrize("bad,msg", [
    ("tok_emb", "PATTERN=SCHEME"),
    ("=int6", "empty pattern"),
    ("*=int9", "bits must be 2..8"),
    ("@big=fp16", "unknown selector"),
    ("*=int6:sdclip", "needs an argument"),
])
def test_spec_parse_errors(bad, msg):
    with pytest.raises(SchemeError, match=msg):
        effective_rules(bad)


def test_family_and_match_names():
    assert family("blocks.3.mlp.fc.weight") == "blocks.*.mlp.fc.weight"
    assert family("blocks.10.attn.c_q.weight") == "blocks.*.attn.c_q.weight"
    assert family("tok_emb.weight") == "tok_emb.weight"
    assert match_names("tok_emb", TENSORS) == ["tok_emb.weight"]
    assert match_names("*.mlp.*", TENSORS) == ["blocks.0.mlp.fc.weight",
                                              "blocks.10.mlp.proj.weight"]


def test_rules_shadowed_by_the_default_passthrough_are_named():
    from golfpack.quant.scheme import kept_by_passthrough

    # "*=int6" without an @ rule: the 4,096-element matrix stays fp16 (said, not silent)
    assert kept_by_passthrough("*=int6", TENSORS) == [
        "skip_weights", "blocks.0.attn_scale", "blocks.0.attn.q_gain", "small.weight"]
    assert kept_by_passthrough("*.mlp.*=int5", TENSORS) == []  # nothing it names is shadowed
    assert kept_by_passthrough("@control=fp32;*=int6", TENSORS) == []  # own @ rule: no defaults
    assert kept_by_passthrough(None, TENSORS) == []
