"""The run folder and resuming in it: which files make a run, refusing to mix two runs in
one folder, what a training-state checkpoint holds, and putting a trainer back where one
left it. The loop that writes checkpoints is trainer.train; the file format is
trainer.checkpointing."""

from __future__ import annotations

import os

import torch

from golfpack.errors import GolfError
from trainer import checkpointing as ckpt
from trainer.config import from_dict, resume_conflicts
from trainer.runtime import Runtime, rng_states, set_rng_states

OUTPUT_NAMES = ("train.log", "final.safetensors", "final.golf", "summary.json")


def check_out_dir(out_dir: str, resume: bool, force: bool) -> bool:
    """Refuse to mix two runs in one folder; True when an earlier run's files are there."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise GolfError(f"{out_dir} exists and is not a directory")
    existing = [n for n in OUTPUT_NAMES if os.path.exists(os.path.join(out_dir, n))]
    existing += [os.path.basename(p) for _, p in ckpt.list_checkpoints(out_dir)]
    if existing and not resume and not force:
        raise GolfError(f"{out_dir} already holds a run ({existing[0]}); pass `resume=True` to "
                        "continue it or `force=True` to start over", param=("resume", "force"))
    return bool(existing)


def clear_out_dir(out_dir: str, rt: Runtime, clear: bool) -> None:
    """Create the run folder; with `clear` (--force over an old run) delete its outputs.
    Called only once every input has been checked, so a refused run deletes nothing."""
    if rt.is_main:
        os.makedirs(out_dir, exist_ok=True)
        if clear:
            for _, p in ckpt.list_checkpoints(out_dir):
                os.unlink(p)
            for n in OUTPUT_NAMES:
                if os.path.exists(os.path.join(out_dir, n)):
                    os.unlink(os.path.join(out_dir, n))
    rt.barrier()


def state_of(tr) -> tuple[dict, dict]:
    """A trainer's whole state: (tensors, JSON metadata) for one checkpoint."""
    tensors = {f"model/{k}": v for k, v in tr.model.state_dict().items()}
    if tr.ema is not None:
        tensors.update({f"ema/{k}": v for k, v in tr.ema.state_dict().items()})
    opt_tensors, opt_meta = ckpt.pack_optimizers(tr.opt.state_dicts(), tr.opt.names)
    tensors.update(opt_tensors)
    tensors.update(rng_states(tr.rt.device))
    meta = {"train_time_ms": tr.train_ms, "stream": tr.stream.state(),
            "stream_files": tr.stream.fingerprint(), "qat_on": bool(tr.qat and tr.qat.on),
            "looping": tr.model.looping, "tokenizer_sha256": tr.tokenizer_sha256,
            "config": tr.cfg.to_dict(), "world_size": tr.rt.world, "optim": opt_meta,
            "train_losses": tr.losses, "val_history": tr.val_history,
            "finished": tr.finished, "stopped_early": tr.stopped_early}
    return tensors, meta


def restore(tr, path: str, tensors: dict, meta: dict) -> None:
    """Put a trainer back where a checkpoint left it, refused when the config (its
    training keys) or the tokenizer changed since."""
    conflicts = resume_conflicts(meta["config"], tr.cfg)
    if conflicts:
        k = conflicts[0]
        raise GolfError(f"cannot resume {path}: config key {k} changed "
                        f"({meta['config'].get(k)!r} -> {getattr(tr.cfg, k)!r})")
    from_dict(meta["config"])  # the saved config must still be a valid config
    saved_tok = meta.get("tokenizer_sha256")
    if saved_tok and saved_tok != tr.tokenizer_sha256:
        raise GolfError(f"cannot resume {path}: it was trained with tokenizer sha256 "
                        f"{saved_tok[:16]}..., {tr.tokenizer} is "
                        f"{tr.tokenizer_sha256[:16]}...")
    with torch.no_grad():
        tr.model.load_state_dict(ckpt.sub_dict(tensors, "model/"))
    tr.opt.load_state_dicts(ckpt.unpack_optimizers(tensors, meta["optim"], tr.opt.names))
    if tr.ema is not None:
        tr.ema.load_state_dict(ckpt.sub_dict(tensors, "ema/"))
    set_rng_states(tensors, tr.rt.device)
    tr.stream.load_state(meta["stream"])
    if tr.qat is not None:
        tr.qat.set(bool(meta.get("qat_on", False)))
    tr.model.set_looping(bool(meta.get("looping", tr.model.looping)))
    tr.step, tr.train_ms = int(meta["step"]), float(meta["train_time_ms"])
    tr.losses = [float(v) for v in meta.get("train_losses", [])]
    tr.val_history = list(meta.get("val_history", []))
    tr.finished = bool(meta.get("finished", False))
    tr.stopped_early = bool(meta.get("stopped_early", False))
    tr.last_ckpt = (tr.step, path)
