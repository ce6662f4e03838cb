"""`golftrain train`: one training run (single process, or one rank under torchrun)."""

from __future__ import annotations

import click

from golfpack.cli.kit import emit_json


@click.command("train")
@click.option("--config", "config", default="baseline", show_default=True,
              help="shipped config (baseline, stack, tiny, frontier, tiny_frontier) or a "
                   "TOML/JSON file")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="directory of fineweb_train_*.bin / fineweb_val_*.bin shards")
@click.option("--tokenizer", required=True, type=click.Path(dir_okay=False),
              help="sentencepiece .model the shards were made with (for bits per byte)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="run folder: train.log, checkpoints/, final.safetensors, final.golf")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config key (typed like its default); repeatable")
@click.option("--resume", is_flag=True, help="continue from the newest checkpoint in --out")
@click.option("--force", is_flag=True, help="start over in a --out that holds an old run")
@click.option("--print-config", is_flag=True,
              help="print the resolved config as JSON and exit without training")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of this process (torch.set_num_threads; under torchrun, "
                   "per rank)")
@click.option("--json", "as_json", is_flag=True,
              help="print a JSON summary at the end (log lines go to train.log only)")
def train_cmd(config, data_dir, tokenizer, out_dir, overrides, resume, force, print_config,
              threads, as_json):
    """Train the reference model with Muon + Adam, optional QAT and EMA, under a step or
    wall-clock budget; then compress the final weights and score the round trip.

    \b
    Single process (CPU or one GPU):
      golftrain train --config tiny --data DATA --tokenizer sp.model --out runs/tiny
    Eight GPUs:
      torchrun --standalone --nproc_per_node=8 -m trainer --config baseline \\
          --data DATA --tokenizer sp.model --out runs/base
    """
    from trainer.config import load_config

    cfg = load_config(config, overrides)
    if print_config:
        emit_json(cfg.to_dict())
        return
    from trainer.train import train

    result = train(cfg, data_dir, tokenizer, out_dir, resume=resume, force=force,
                   echo=not as_json, threads=threads)
    if as_json:
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            secs = max(result.train_time_ms / 1000.0, 1e-9)
            emit_json({"out_dir": result.out_dir, "steps": result.steps,
                       "train_time_ms": result.train_time_ms,
                       "step_avg_ms": result.train_time_ms / max(result.steps, 1),
                       "tokens_per_s": result.steps * cfg.train_batch_tokens / secs,
                       "stopped_early": result.stopped_early,
                       "final_train_loss": result.train_losses[-1] if result.train_losses
                       else None, "val_history": result.val_history, "final": result.final})
