"""Trainer configuration: shipped configs, typed overrides, unknown keys refused in one line,
QAT/export consistency, and the CLI surface (help, --print-config, one-line errors)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from trainer.config import ConfigError, TrainConfig, load_config, resume_conflicts


def test_shipped_configs_load_with_their_promises():
    base = load_config("baseline")
    assert (base.num_layers, base.model_dim, base.train_seq_len) == (9, 512, 1024)
    assert base.train_batch_tokens == 524_288 and base.max_wallclock_seconds == 600
    assert base.warmup_steps == 20 and base.warmdown_iters == 1200
    assert (base.matrix_lr, base.embed_lr, base.scalar_lr) == (0.04, 0.05, 0.04)
    stack = load_config("stack")
    assert (stack.num_layers, stack.mlp_mult, stack.train_seq_len) == (11, 3.0, 2048)
    assert stack.qat_enabled and stack.qat == "int6" and stack.ema_decay == 0.997
    tiny = load_config("tiny")
    assert tiny.num_layers <= 4 and tiny.model_dim <= 128 and not tiny.compile
    assert tiny.max_wallclock_seconds == 0  # iteration schedules keep resume bit-exact
    # the baseline config's keys are the defaults: a key list drift would show here
    assert base == TrainConfig(export_scheme="int8")


def test_overrides_are_typed_by_the_default():
    cfg = load_config("tiny", ["train_batch_tokens=8_192", "matrix_lr=0.02", "compile=yes",
                               "qat=on", "iterations=1e3", "ema_decay=0.99"])
    assert cfg.train_batch_tokens == 8192 and isinstance(cfg.train_batch_tokens, int)
    assert cfg.matrix_lr == 0.02 and cfg.compile is True and cfg.qat_spec == "int8"
    assert cfg.iterations == 1000 and cfg.ema_decay == 0.99


@pytest.mark.parametrize("override, message", [
    ("iteratoins=5", "unknown config key 'iteratoins' in `overrides` (did you mean 'iterations'?)"),
    ("iterations=1.5", "iterations in `overrides` expects int, got '1.5'"),
    ("compile=maybe", "compile in `overrides` expects bool"),
    ("ema_decay=1.0", "ema_decay must lie in [0, 1)"),
    ("iterations", "must look like key=value"),
    ("qat=int9", "qat: "),
    ("qat=int5", "QAT would train for a grid the export does not use"),
    ("train_seq_len=0", "train_seq_len must be positive"),
])
def test_bad_overrides_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_files_toml_and_json(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"num_layers": 3, "seed": 7}))
    cfg = load_config(j, ["seed=8"])
    assert cfg.num_layers == 3 and cfg.seed == 8
    t = tmp_path / "c.toml"
    t.write_text('qat = "int6"\nexport_scheme = "int5"\n')
    with pytest.raises(ConfigError, match="QAT would train for a grid the export does not use"):
        load_config(t)
    bad = tmp_path / "bad.toml"
    bad.write_text("model_dims = 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'model_dims'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="neither a shipped name"):
        load_config(tmp_path / "missing.toml")


def test_micro_layout_keeps_the_global_batch():
    cfg = load_config("baseline")
    assert cfg.micro_layout(8) == (1, 64)   # 8 GPUs: 64 sequences each, no accumulation
    assert cfg.micro_layout(1) == (8, 64)   # 1 GPU: 8 micro-steps of the same size
    with pytest.raises(ConfigError, match="whole 1024-token sequences"):
        load_config("baseline", ["train_batch_tokens=1000"]).micro_layout(1)


def test_resume_conflicts_name_only_training_keys():
    a = load_config("tiny")
    saved = a.to_dict()
    assert resume_conflicts(saved, load_config("tiny", ["val_loss_every=7"])) == []
    assert resume_conflicts(saved, load_config("tiny", ["matrix_lr=0.01"])) == ["matrix_lr"]


def test_cli_print_config_and_errors(tmp_path):
    from trainer.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["train", "--help"])
    assert out.exit_code == 0 and "--resume" in out.output and "torchrun" in out.output
    out = runner.invoke(main, ["train", "--config", "tiny", "--data", str(tmp_path),
                               "--tokenizer", "t.model", "--out", str(tmp_path / "o"),
                               "--set", "seed=5", "--print-config"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["seed"] == 5
    out = runner.invoke(main, ["train", "--config", "tiny", "--data", str(tmp_path),
                               "--tokenizer", "t.model", "--out", str(tmp_path / "o"),
                               "--set", "sed=5"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines()[-1].startswith("error: unknown config key 'sed'")
