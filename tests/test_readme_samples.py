"""The README's samples are the output of the commands shown next to them: rerun each
command's deterministic part on the same inputs and check the figures the sample prints.

Weights differ from the README's trained run (a test cannot train for minutes), so figures
that depend on weight values are checked within a margin, everything else exactly."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks() -> list[str]:
    return re.findall(r"```(?:bash)?\n(.*?)```", README, flags=re.S)


def _command(prefix: str) -> list[str]:
    """The README command starting with `prefix` (continuation lines joined), as argv."""
    for block in _blocks():
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if line.strip().startswith(prefix):
                return shlex.split(line.split("#")[0] if "# " in line else line)
    raise AssertionError(f"README has no `{prefix}` command")


def _sample_after(prefix: str) -> str:
    blocks = _blocks()
    for i, block in enumerate(blocks):
        if prefix in block.replace("\\\n", " "):
            return blocks[i + 1]
    raise AssertionError(f"README has no sample after `{prefix}`")


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _int(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory):
    import torch

    from trainer.config import load_config
    from trainer.model import GPT, GPTConfig

    cfg = load_config("tiny", extra={"vocab_size": 1024}).model_config()
    torch.manual_seed(0)
    model = GPT(GPTConfig(**cfg))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.state_dict(), {**cfg, "arch": "trainer.model:GPT"}


@pytest.mark.slow
def test_step2_compress_sample(tiny_state, shared_data):
    """Step 2: the tiny model under the README's --scheme has the sample's parameter count,
    int codes for every matrix (not the default's fp16) and the sample's stream sizes."""
    from golfpack.compress import compress_state_dict

    argv = _command("golfpack compress runs/")
    sample = _sample_after("golfpack compress runs/")
    m = re.search(r"model\s+([\d,]+) bytes\s+\(([\d.]+) bits/param over ([\d,]+) params; "
                  r"header ([\d,]+)\)", sample)
    assert m, sample
    model_bytes, params, header = _int(m[1]), _int(m[3]), _int(m[4])
    stream = re.search(r"(codes:\S+)\s+\S+\s+([\d,]+) ->", sample)
    sd, cfg = tiny_state
    _, rep = compress_state_dict(sd, cfg, scheme_spec=_option(argv, "--scheme"),
                                 code_files=[ROOT / _option(argv, "--code")],
                                 code_mode=_option(argv, "--code-mode"),
                                 tokenizer=shared_data / _option(argv, "--tokenizer"))
    assert rep["params"] == params
    assert rep["kept_in_float"] == {}
    matrices = [t for t in rep["tensors"] if t["params"] >= 4096]
    assert matrices and all(t["scheme"].startswith("int") for t in matrices)
    raw = {s["name"]: s["raw_bytes"] for s in rep["streams"]}
    assert raw[stream[1]] == _int(stream[2])
    assert abs(rep["header_bytes"] - header) <= 16  # the trained run's config text differs
    assert abs(rep["model_bytes"] - model_bytes) / model_bytes < 0.10  # weights differ
    # the code rows: the script's minified bytes exactly; the decoder's depend on the codecs
    # the trained weights chose (these random weights choose others), the sums must hold
    code = _int(re.search(r"code\s+([\d,]+) bytes", sample)[1])
    script = _int(re.search(r"trainer/model.py\s+[\d,]+ ->\s+([\d,]+)", sample)[1])
    dec = _int(re.search(r"\(golf decoder\)\s+[\d,]+ ->\s+([\d,]+)", sample)[1])
    assert rep["code_bytes"] - rep["decoder_bytes"] == script
    assert code == script + dec
    assert _int(re.search(r"total\s+([\d,]+) bytes", sample)[1]) == model_bytes + code


def test_default_scheme_on_the_tiny_model_says_which_rule_kept_it_fp16(tiny_state):
    """What README step 2 warns about: without --scheme every tiny matrix stays fp16 under
    the built-in @small=fp16, and the report names that rule for each."""
    from golfpack.quant.qmodel import dtype_name
    from golfpack.quant.scheme import CONTROL_PATTERNS, kept_in_float

    sd, _ = tiny_state
    matrices = {n: (dtype_name(t), int(t.numel())) for n, t in sd.items() if t.ndim >= 2}
    kept = kept_in_float(None, matrices)
    control = {n for n in matrices if any(c in n for c in CONTROL_PATTERNS)}
    assert kept and set(kept) == set(matrices) - control
    assert set(kept.values()) == {"@small=fp16"}
    assert kept_in_float("@control=fp32;*.attn.*=int6;*.mlp.*=int6", matrices) == {}
    assert kept_in_float("*=int6", matrices) == kept  # the user's rule is shadowed too


def test_step3_score_plan_sample(tmp_path, shared_data):
    """Steps 0 and 3: the shards of step 0 hold the sample's tokens, and the plan of step 3
    has its windows, targets and bytes (all independent of the weights)."""
    from golfeval.data.build import build
    from golfeval.data.bytetables import ByteTables
    from golfeval.data.shards import load_tokens
    from golfeval.score.core import make_plan

    build_argv = _command("golfeval data build --tokenizer fineweb_1024_bpe.model "
                          "--docs fineweb_val")
    score_argv = _command("golfeval score --artifact model.golf")
    sample = _sample_after("golfeval score --artifact model.golf")
    tok = shared_data / _option(build_argv, "--tokenizer")
    build(tok, shared_data / _option(build_argv, "--docs"), tmp_path / "data",
          val_docs=int(_option(build_argv, "--val-docs")))
    tokens = load_tokens(tmp_path / "data", "val")
    assert tokens.size == _int(re.search(r"data\s+([\d,]+) tokens", sample)[1])
    seq, stride = int(_option(score_argv, "--seq-len")), int(_option(score_argv, "--stride"))
    plan_line = re.search(r"plan\s+(\w+), seq_len (\d+), stride (\d+): ([\d,]+) windows",
                          sample)
    assert (plan_line[1], int(plan_line[2]), int(plan_line[3])) == \
        (_option(score_argv, "--mode"), seq, stride)
    plan = make_plan(tokens.size, _option(score_argv, "--mode"), seq, stride)
    assert len(plan) == _int(plan_line[4])
    scored = re.search(r"scored\s+([\d,]+) of ([\d,]+) targets, ([\d,]+) bytes", sample)
    assert plan.scored_tokens == _int(scored[1]) and plan.n_targets == _int(scored[2])
    nbytes = ByteTables.from_tokenizer(tok).target_bytes(tokens)
    assert int(nbytes.sum()) == _int(scored[3])
