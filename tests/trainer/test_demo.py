"""`make demo --quick`: the whole pipeline (tokenizer, shards, QAT training, compression,
flat/sliding/TTT scoring, 2 configs x 3 seeds, significance) at a reduced size."""

from __future__ import annotations

import math

import pytest

from golfpack.compress import inspect_artifact
from trainer.cli.demo import check_summary, render, run_demo


@pytest.mark.slow
def test_demo_quick_pipeline(tmp_path, monkeypatch):
    monkeypatch.delenv("GOLF_DATA", raising=False)
    s = run_demo(str(tmp_path / "demo"), quick=True, quiet=True)
    check_summary(s)
    assert s["fits"] and 0 < s["bytes"]["total_bytes"] <= 16_000_000
    assert s["bytes"]["total_bytes"] == s["bytes"]["model_bytes"] + s["bytes"]["code_bytes"]
    for mode in ("flat", "sliding", "lora_ttt", "sgd_ttt"):
        assert math.isfinite(s["bpb"][mode]["val_bpb"])
    assert s["bpb"]["sliding"]["val_bpb"] <= s["bpb"]["flat"]["val_bpb"]
    assert s["significance"]["welch_p"] is not None
    text = render(s)
    assert "FITS" in text and "sliding" in text
    # the artifact stores the grid QAT trained for, not golfpack's fp16 small-tensor default
    schemes = {t["name"]: t["scheme"] for t in inspect_artifact(s["files"]["artifact"])["tensors"]}
    assert schemes["blocks.0.mlp.fc.weight"].startswith("int6")
    assert schemes["tok_emb.weight"].startswith("int8")


def test_demo_refuses_nonempty_out(tmp_path):
    from golfpack.errors import GolfError

    out = tmp_path / "d"
    out.mkdir()
    (out / "x").write_text("keep")
    with pytest.raises(GolfError, match="--force"):
        run_demo(str(out), quick=True, quiet=True)
