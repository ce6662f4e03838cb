"""`--mode sliding-record` against the records' own sliding evaluation: the eval_val_sliding
function printed in a 2026-03-20 record's training log (../shared/records), run on CPU on
golf's tiny GPT; plus the plan's known flaws counted exactly."""

from __future__ import annotations

import json
import math
import re
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from golfeval.cli import main as golfeval_main
from golfeval.score.recordmode import record_sliding_plan

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LOG = SHARED / "records" / "track_10min_16mb" / "2026-03-20_10L_Int5MLP_MuonWD04_SWA50" / \
    "train_seed42.log"
BASELINE = SHARED / "reference" / "baseline" / "train_gpt.py"
L, S, N = 64, 16, 1000  # 999 targets -> 960 kept (15 blocks), 39 trimmed


def test_plan_flaws_counted():
    plan = record_sliding_plan(131_073, 1024, 64)
    cover = plan.coverage()
    assert plan.n_targets == 131_072
    assert int((cover - 1).clip(min=0).sum()) == 960 and int(cover.max()) == 16
    assert (cover[-64:] == 16).all() and (cover[:-64] == 1).all()
    plan = record_sliding_plan(N, L, S)
    assert plan.n_targets == 960


def _record_sliding_fn():
    if not LOG.is_file():
        pytest.skip("../shared/records (the 2026-03-20 record's log) is absent")
    text = LOG.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^def eval_val_sliding\(.*?(?=^def |^class |^# ---)", text, re.S | re.M)
    assert m, "eval_val_sliding not found in the log"
    ns = {"torch": torch, "F": torch.nn.functional, "math": math, "Tensor": torch.Tensor,
          "nn": torch.nn, "dist": torch.distributed, "Hyperparameters": object}
    exec(compile(m.group(0), str(LOG), "exec"), ns)  # noqa: S102 - the record's own code
    return ns["eval_val_sliding"]


def test_matches_the_records_function(tiny_shards, tiny_tokenizer, tmp_path, one_thread):
    import sentencepiece as spm
    from tinymodels import live_gpt, saved_gpt

    from golfpack.foreign.script import import_script

    fn = _record_sliding_fn()
    if not BASELINE.is_file():
        pytest.skip("../shared/reference/baseline/train_gpt.py is absent")
    base = import_script(BASELINE)
    model = live_gpt(0)[0].eval()
    ckpt = saved_gpt(tmp_path / "m.safetensors")

    class Logits(torch.nn.Module):  # the records' scorer calls forward_logits(x)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward_logits(self, x):
            return self.m(x)

    # the record's caller trims the stream with load_validation_tokens (the baseline's)
    val = base.load_validation_tokens(str(tiny_shards / "fineweb_val_*.bin"), L)[:N]
    val = val[: (val.numel() - 1) // L * L + 1]
    sp = spm.SentencePieceProcessor(model_file=str(tiny_tokenizer))
    luts = base.build_sentencepiece_luts(sp, 512, torch.device("cpu"))
    args = types.SimpleNamespace(train_seq_len=L)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss, bpb = fn(args, Logits(model), 0, 1, torch.device("cpu"), val, *luts, stride=S)
    r = CliRunner().invoke(golfeval_main, [
        "score", "--checkpoint", str(ckpt), "--data", str(tiny_shards), "--tokenizer",
        str(tiny_tokenizer), "--mode", "sliding-record", "--seq-len", str(L), "--stride",
        str(S), "--max-tokens", str(N), "--no-sidecar", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert abs(rep["val_bpb"] - bpb) <= 2e-6 * bpb and abs(rep["val_loss"] - loss) <= 2e-6 * loss
    rc = rep["record_comparison"]
    assert rc["double_counted_positions"] == (L // S - 1) * S and rc["trimmed_targets"] == 39
    assert rc["exact_scored_tokens"] == N - 1
    assert math.isclose(rc["difference_bpb"], rc["record_bpb"] - rc["exact_bpb"])
    assert np.isfinite(rc["predicted_record_bpb"])
