"""Whole training runs of the tiny config on real text (C4 documents for training, FineWeb
documents for validation, the challenge's sp1024 tokenizer): the loss falls, the end-of-run
export and scores land in a log golfeval parses back, a SIGKILLed run resumes to the same
bits, 2 gloo ranks match 1 process, and a non-finite loss stops the run cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from golfpack.errors import GolfError
from trainer.config import load_config
from trainer.train import KILL_ENV, NAN_ENV, TrainingDiverged, train

ROOT = Path(__file__).resolve().parents[2]
# Iteration-based schedule (no wall-clock cap): the only way a run can be bit-exact.
QUICK = ["final_eval=false", "val_loss_every=0", "train_log_every=1", "val_max_tokens=4096",
         "train_batch_tokens=2048"]


# One intra-op thread, here (one_thread) and in the subprocesses (_run_cli): the bit-exact
# resume compares runs with equal thread counts.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def c4_data(c4_shards):
    """300 C4 documents as train shards, 3 FineWeb documents as val shards (sp1024)."""
    out, tok = c4_shards(train_docs=300, val_docs=3)
    names = sorted(p.name for p in out.iterdir())
    assert names[0].startswith("fineweb_train_") and names[-1] == "fineweb_val_000000.bin"
    return out, tok


def _weights(path):
    from golfpack.checkpoint import load

    return load(path)[0]


def _run_cli(args, env_extra=None, torchrun=0):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    head = [sys.executable, "-m"]
    if torchrun:
        head += ["torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}", "-m"]
    return subprocess.run(head + ["trainer", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_loss_falls_and_the_log_parses_back(c4_data, tmp_path):
    pytest.importorskip("golfpack.compress", reason="golfpack.compress is not written yet")
    data, tok = c4_data
    cfg = load_config("tiny", ["iterations=30", "warmdown_iters=10", "val_loss_every=15",
                               "train_log_every=5", "ema_decay=0.9", "qat=on",
                               "qat_start_lr_mult=0.5", "checkpoint_every=10",
                               "train_batch_tokens=2048", "val_max_tokens=4096"])
    res = train(cfg, data, tok, tmp_path / "run", echo=False)
    first, last = res.train_losses[0], sum(res.train_losses[-5:]) / 5
    assert first > 6.5 and last < first - 1.0, (first, last)
    assert res.val_history[-1]["val_loss"] < res.val_history[0]["val_loss"] - 1.0
    run = tmp_path / "run"
    for name in ("train.log", "final.safetensors", "final.golf", "summary.json"):
        assert (run / name).is_file(), name
    from golfpack.checkpoint import build_model, load

    sd, model_cfg = load(run / "final.safetensors")
    assert model_cfg["num_layers"] == 2 and model_cfg["arch"] == "trainer.model:GPT"
    build_model(model_cfg, sd)
    text = (run / "train.log").read_text()
    assert "qat:enabled" in text and "Hyperparameters:" in text and "config_json:" in text
    logparse = pytest.importorskip("golfeval.records.parse")
    (log,) = logparse.parse_text(text)
    assert log.status == "ok" and log.kind == "sliding", log.to_dict()
    assert log.val_bpb == pytest.approx(res.final["sliding"]["val_bpb"], abs=1e-8)
    assert log.steps == 30 and log.planned_steps == 30 and log.echo_seed == cfg.seed
    assert log.total_bytes == res.final["total_bytes"] and log.code_bytes > 0
    assert log.val_tokens > 0 and log.model_params > 0
    assert log.config["model_dim"] == "64"
    flat = [m for m in log.metrics if m.kind == "flat" and m.label.endswith("_exact")]
    assert flat and flat[0].val_bpb == pytest.approx(res.final["flat"]["val_bpb"], abs=1e-8)


@pytest.mark.slow
def test_sigkilled_run_resumes_bit_exact(c4_data, tmp_path):
    """Kill at step 8 (last checkpoint: step 6, after QAT switched on at step 5), resume, and
    end with the same bits as an uninterrupted run. The killed run also does 2 compile
    warm-up steps: undoing them must leave no trace either."""
    data, tok = c4_data
    sets = QUICK + ["iterations=9", "checkpoint_every=3", "ema_decay=0.9", "qat=on",
                    "qat_start_lr_mult=0.7", "warmdown_iters=6"]
    ref = train(load_config("tiny", sets), data, tok, tmp_path / "ref", echo=False)
    args = ["--config", "tiny", "--data", str(data), "--tokenizer", str(tok), "--out",
            str(tmp_path / "cut"), *[a for s in sets + ["warmup_steps=2"] for a in ("--set", s)]]
    killed = _run_cli(args, {KILL_ENV: "8"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "cut" / "final.safetensors").exists()
    resumed = _run_cli(args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed_from_checkpoint:" in (tmp_path / "cut" / "train.log").read_text()
    want, got = _weights(tmp_path / "ref" / "final.safetensors"), \
        _weights(tmp_path / "cut" / "final.safetensors")
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["train_losses"] == ref.train_losses


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(c4_data, tmp_path):
    data, tok = c4_data
    sets = QUICK + ["iterations=4", "checkpoint_every=0", "device=cpu"]
    one = train(load_config("tiny", sets + ["grad_accum_steps=2"]), data, tok,
                tmp_path / "one", echo=False)
    args = ["--config", "tiny", "--data", str(data), "--tokenizer", str(tok), "--out",
            str(tmp_path / "two"), *[a for s in sets + ["grad_accum_steps=1"]
                                     for a in ("--set", s)]]
    two = _run_cli(args, torchrun=2)
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(summary["train_losses"]) == 4
    assert summary["train_losses"] == pytest.approx(one.train_losses, abs=1e-5)
    want, got = _weights(tmp_path / "one" / "final.safetensors"), \
        _weights(tmp_path / "two" / "final.safetensors")
    for k in want:
        assert torch.allclose(want[k], got[k], atol=1e-5), k


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(c4_data, tmp_path,
                                                                  monkeypatch):
    data, tok = c4_data
    out = tmp_path / "nan"
    cfg = load_config("tiny", QUICK + ["iterations=8", "checkpoint_every=2"])
    monkeypatch.setenv(NAN_ENV, "4")
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, data, tok, out, echo=False)
    msg = str(err.value)
    assert "non-finite train loss (nan) at step 4" in msg and "step_0000002" in msg
    assert err.value.exit_code == 1 and "\n" not in msg
    from trainer.checkpointing import list_checkpoints, load_state

    assert [s for s, _ in list_checkpoints(out)] == [2]
    tensors, _ = load_state(list_checkpoints(out)[0][1])
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model/"))
    assert "training_diverged:" in (out / "train.log").read_text()
    assert not (out / "final.safetensors").exists()
    monkeypatch.delenv(NAN_ENV)
    with pytest.raises(GolfError, match="already holds a run"):
        train(cfg, data, tok, out, echo=False)
    with pytest.raises(GolfError, match="no such data directory"):  # --force, bad input:
        train(cfg, tmp_path / "nodata", tok, out, force=True, echo=False)
    assert (out / "train.log").exists() and list_checkpoints(out)  # ... nothing deleted
    changed = load_config("tiny", QUICK + ["iterations=8", "checkpoint_every=2",
                                           "matrix_lr=0.01"])
    with pytest.raises(GolfError, match="config key matrix_lr changed"):
        train(changed, data, tok, out, resume=True, echo=False)


def test_wallclock_cap_stops_early_and_says_so(c4_data, tmp_path):
    data, tok = c4_data
    cfg = load_config("tiny", QUICK + ["iterations=100000", "max_wallclock_seconds=1.5",
                                       "warmdown_iters=3", "checkpoint_every=0"])
    res = train(cfg, data, tok, tmp_path / "cap", echo=False)
    assert res.stopped_early and 1 <= res.steps < 100000
    assert res.train_time_ms >= 1500
    text = (tmp_path / "cap" / "train.log").read_text()
    assert "stopping_early: wallclock_cap train_time:" in text
    logparse = pytest.importorskip("golfeval.records.parse")
    (log,) = logparse.parse_text(text)
    assert log.stopped_early and log.steps == res.steps and log.planned_steps == 100000
