"""The run's log in the challenge's line formats (what golfeval's log parser reads back).

Only rank 0 writes. Every line goes to OUT/train.log (flushed at once, so a killed run keeps
its log) and, unless quiet, to stdout. The format helpers below are the single place where
line shapes are defined.
"""

from __future__ import annotations

import os
import sys


class TrainLog:
    def __init__(self, path, enabled: bool = True, echo: bool = True, append: bool = False):
        self.enabled, self.echo = enabled, echo
        self.fh = None
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.fh = open(path, "a" if append else "w", encoding="utf-8")

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        self.fh.write(line + "\n")
        self.fh.flush()
        if self.echo:
            print(line, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def run_header(tr, data_dir) -> list[str]:
    """What a fresh run says about itself first: tokenizer, data, model size, layout, then
    the hyperparameter echo (a `Hyperparameters:` block of `  key: value` lines)."""
    cfg, rt = tr.cfg, tr.rt
    qat = cfg.qat_spec if tr.qat else "off"
    lines = [
        f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={tr.tokenizer}",
        f"train_loader:shards pattern={os.path.join(os.fspath(data_dir), cfg.train_files)} "
        f"shards:{len(tr.stream.paths)} tokens:{tr.stream.total}",
        f"val_loader:shards pattern={os.path.join(os.fspath(data_dir), cfg.val_files)} "
        f"tokens:{tr.val_tokens.size}",
        f"model_params:{tr.model.num_params()}",
        *([f"gptq:reserving {cfg.gptq_reserve_seconds:g}s, "
           f"effective={1000.0 * (cfg.max_wallclock_seconds - cfg.gptq_reserve_seconds):.0f}ms"]
          if cfg.gptq_reserve_seconds > 0 and cfg.max_wallclock_seconds > 0 else []),
        f"world_size:{rt.world} grad_accum_steps:{tr.accum} device:{rt.device.type}",
        f"qat:{qat} ema_decay:{cfg.ema_decay} ema_warmup:{cfg.ema_warmup} compile:{cfg.compile}",
        "Hyperparameters:",
    ]
    return lines + [f"  {k}: {v}" for k, v in cfg.to_dict().items()]


def train_line(step: int, total: int, loss: float, train_ms: float, step_avg_ms: float,
               tok_s: float) -> str:
    return (f"step:{step}/{total} train_loss:{loss:.4f} train_time:{train_ms:.0f}ms "
            f"step_avg:{step_avg_ms:.2f}ms tok_s:{tok_s:.0f}")


def val_line(step: int, total: int, loss: float, bpb: float, train_ms: float,
             step_avg_ms: float) -> str:
    return (f"step:{step}/{total} val_loss:{loss:.4f} val_bpb:{bpb:.4f} "
            f"train_time:{train_ms:.0f}ms step_avg:{step_avg_ms:.2f}ms")


def stop_line(train_ms: float, step: int, total: int) -> str:
    return f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{total}"


def final_lines(label: str, loss: float, bpb: float, eval_ms: float, extras: str = "") -> list:
    """The rounded line and the `_exact` line (8 decimals) of one final evaluation."""
    extra = f" {extras}" if extras else ""
    return [f"{label} val_loss:{loss:.4f} val_bpb:{bpb:.4f}{extra} eval_time:{eval_ms:.0f}ms",
            f"{label}_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"]


def size_lines(tag: str, model_bytes: int, code_bytes: int, total_bytes: int) -> list[str]:
    t = f" {tag}" if tag else ""
    return [f"Serialized model{t}: {model_bytes} bytes",
            *([f"Code size: {code_bytes} bytes"] if not tag else []),
            f"Total submission size{t}: {total_bytes} bytes"]
