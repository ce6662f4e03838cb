"""The training loop: data -> (compiled, DDP) model -> Muon + Adam -> EMA, under a step or
wall-clock budget, with periodic validation, atomic checkpoints and bit-exact resume.

`train()` is the library entry point; `golftrain train` and `python -m trainer` wrap it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from golfpack.errors import CheckFailed, GolfError
from trainer import checkpointing as ckpt
from trainer import finish
from trainer import resume as resume_mod
from trainer.config import TrainConfig
from trainer.data import BatchLoader, TokenStream, check_tokenizer, load_val_tokens, resolve_shards
from trainer.model import GPT, Rotary, layer_order
from trainer.optim.ema import EMA
from trainer.optim.groups import (
    build_optimizers,
    lr_multiplier,
    muon_momentum,
    train_cap_ms,
    train_fraction,
    wd_multiplier,
)
from trainer.qat import install_qat
from trainer.runtime import Runtime, init_runtime, rng_states, set_rng_states, shutdown
from trainer.trainlog import TrainLog, run_header, stop_line, train_line, val_line

KILL_ENV = "GOLF_TEST_KILL_AT_STEP"   # test hook: SIGKILL this process after step N
NAN_ENV = "GOLF_TEST_NAN_AT_STEP"     # test hook: poison the loss of step N


class TrainingDiverged(CheckFailed):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class TrainResult:
    out_dir: str
    steps: int
    train_time_ms: float
    stopped_early: bool
    train_losses: list[float]
    val_history: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)


class LossModule(nn.Module):
    """forward(x, y) -> mean loss: the shape DDP and torch.compile want to wrap."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return self.model.loss(x, y)


def prime_rotary(model: GPT, max_len: int, device) -> None:
    """Fill the rotary cos/sin caches once, outside inference mode, for the longest length
    used. Otherwise the first validation (run under inference_mode) would create them as
    inference tensors that training cannot use, or a later refill would recompile."""
    for m in model.modules():
        if isinstance(m, Rotary):
            m(max_len, device, torch.float32)


def resolve_vocab(cfg: TrainConfig, tokenizer) -> TrainConfig:
    from golfeval.data.tokenizer import load

    vocab = load(tokenizer).vocab_size()
    if cfg.vocab_size == 0:
        return dataclasses.replace(cfg, vocab_size=vocab)
    if cfg.vocab_size != vocab:
        raise GolfError(f"config vocab_size {cfg.vocab_size} does not match the tokenizer "
                        f"{tokenizer} ({vocab} pieces)")
    return cfg


class Trainer:
    """Everything one run holds; methods are the loop's pieces."""

    def __init__(self, cfg: TrainConfig, data_dir, tokenizer, out_dir, rt: Runtime,
                 log=None):
        cfg = resolve_vocab(cfg, tokenizer)
        self.cfg, self.rt, self.out_dir = cfg, rt, os.fspath(out_dir)
        self.log = log if log is not None else (lambda line: None)
        self.tokenizer = os.fspath(tokenizer)
        train_paths, self.val_paths = resolve_shards(data_dir, cfg.train_files, cfg.val_files)
        self.stream = TokenStream(train_paths, cfg.vocab_size)
        self.accum, micro_seqs = cfg.micro_layout(rt.world)
        self.loader = BatchLoader(self.stream, rt.rank, rt.world, self.accum, micro_seqs,
                                  cfg.train_seq_len, rt.device)
        self.val_tokens = load_val_tokens(self.val_paths, cfg.vocab_size)
        self.tokenizer_sha256 = check_tokenizer(self.tokenizer, self.val_tokens,
                                                self.stream.read(0, min(self.stream.total,
                                                                        1 << 16)))
        from golfeval.data.bytetables import ByteTables

        self.val_bytes = ByteTables.from_tokenizer(self.tokenizer).target_bytes(self.val_tokens)
        n_periodic = cfg.val_max_tokens or self.val_tokens.size
        self.periodic_tokens = self.val_tokens[:n_periodic]
        self.periodic_bytes = self.val_bytes[:max(0, min(n_periodic, self.val_tokens.size) - 1)]

        torch.manual_seed(cfg.seed)
        self.model = GPT(cfg.model_config()).to(rt.device)
        prime_rotary(self.model, max(cfg.train_seq_len, cfg.effective_eval_seq_len), rt.device)
        # depth recurrence waits for loop_start_frac of training (the evaluated model loops)
        self.model.set_looping(cfg.loop_start_frac <= 0)
        self.qat = install_qat(self.model, cfg.qat_spec, rt.device) if cfg.qat_enabled else None
        self.opt = build_optimizers(self.model, cfg, rt.device)
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        self.step_module = LossModule(self.model)
        fwd = self.step_module
        if cfg.compile:
            fwd = torch.compile(fwd, dynamic=False)
        if rt.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            fwd = DDP(fwd, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                      broadcast_buffers=False)
        self.fwd = fwd
        self.step = 0
        self.train_ms = 0.0
        self.losses: list[float] = []
        self.pending: list[torch.Tensor] = []
        self.val_history: list[dict] = []
        self.last_ckpt: tuple[int, str] | None = None
        self.finished = False
        self.stopped_early = False

    # -- one optimizer step --
    def train_step(self, mult: float, poison: bool = False) -> None:
        cfg = self.cfg
        self.opt.set_lr_multiplier(mult)
        self.opt.set_muon_momentum(muon_momentum(cfg, self.step))
        total = torch.zeros((), device=self.rt.device)
        batches = self.loader.next_step()
        for m, (x, y) in enumerate(batches):
            last = m == len(batches) - 1
            no_sync = self.fwd.no_sync() if self.rt.distributed and not last \
                else contextlib.nullcontext()
            with no_sync:
                with self.rt.autocast():
                    loss = self.fwd(x, y)
                if poison:
                    loss = loss * float("nan")
                (loss / self.accum).backward()
            total += loss.detach()
        if cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
        self.opt.step()
        self.opt.zero_grad()
        if self.ema is not None:
            self.ema.update(self.step)
        self.pending.append(total / self.accum)
        self.step += 1

    def flush_losses(self) -> float:
        """All-reduce the losses of the steps since the last flush; return the latest."""
        if self.pending:
            local = torch.stack(self.pending).float()
            self.pending = []
            self.losses.extend(self.rt.all_mean(local).double().cpu().tolist())
        return self.losses[-1] if self.losses else float("nan")

    # -- compile warm-up, undone --
    def warmup(self) -> None:
        """Run warmup_steps real steps so compilation and allocator warm-up happen before the
        clock starts, then restore weights, optimizer state, EMA and stream position."""
        n = self.cfg.warmup_steps
        if n <= 0:
            return
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_states = copy.deepcopy(self.opt.state_dicts())
        rng = rng_states(self.rt.device)
        position = self.stream.position
        for i in range(n):
            self.train_step(1.0)
            self.log(f"warmup_step:{i + 1}/{n}")
        looping = self.model.looping
        if self.cfg.num_loops and not looping:  # compile the looped graph too, off the clock
            self.model.set_looping(True)
            for i in range(n):
                self.train_step(1.0)
                self.log(f"loop_warmup_step:{i + 1}/{n}")
            self.model.set_looping(looping)
        self.rt.sync()
        with torch.no_grad():
            self.model.load_state_dict(model_state)
        self.opt.load_state_dicts(opt_states)
        self.opt.zero_grad()
        if self.ema is not None:
            self.ema = EMA(self.model, self.cfg.ema_decay, self.cfg.ema_warmup)
        set_rng_states(rng, self.rt.device)
        self.stream.position = position
        self.step, self.pending = 0, []

    # -- checkpoints (what goes in one and how it is restored: trainer.resume) --
    def state_tensors_and_meta(self):
        return resume_mod.state_of(self)

    def restore(self, path: str, tensors: dict, meta: dict) -> None:
        resume_mod.restore(self, path, tensors, meta)

    def save_checkpoint(self) -> None:
        self.flush_losses()
        tensors, meta = self.state_tensors_and_meta()
        path = ckpt.checkpoint_path(self.out_dir, self.step)
        if self.rt.is_main:
            path = ckpt.save_state(self.out_dir, self.step, tensors, meta,
                                   keep=self.cfg.checkpoint_keep)
        self.rt.barrier()
        self.last_ckpt = (self.step, path)

    # -- validation --
    def validate(self) -> dict:
        res = finish.score(self.model, self.periodic_tokens, self.periodic_bytes, self.cfg,
                           self.rt, mode="flat")
        avg = self.train_ms / max(self.step, 1)
        self.log(val_line(self.step, self.cfg.iterations, res.val_loss, res.val_bpb,
                          self.train_ms, avg))
        entry = {"step": self.step, "val_loss": res.val_loss, "val_bpb": res.val_bpb}
        self.val_history.append(entry)
        return entry

    def check_finite(self) -> None:
        latest = self.flush_losses()
        if math.isfinite(latest) and all(math.isfinite(v) for v in self.losses[-64:]):
            return
        bad = next(i for i, v in enumerate(self.losses) if not math.isfinite(v)) + 1
        where = (f"last good checkpoint {self.last_ckpt[1]} (step {self.last_ckpt[0]})"
                 if self.last_ckpt else "no checkpoint was written")
        msg = (f"non-finite train loss ({self.losses[bad - 1]}) at step {bad}; training "
               f"stopped, {where}")
        self.log(f"training_diverged: {msg}")
        raise TrainingDiverged(msg)


def run_loop(tr: Trainer) -> bool:
    """Train until `iterations` or the wall-clock cap; returns True if the cap stopped it."""
    cfg, rt, log = tr.cfg, tr.rt, tr.log
    cap_ms = train_cap_ms(cfg)  # the wall clock less the export's reserve
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    nan_at = int(os.environ.get(NAN_ENV, "0") or 0)
    cuda = rt.device.type == "cuda"
    stop = False
    rt.sync()
    t0 = time.perf_counter()
    while True:
        last = tr.step >= cfg.iterations or stop
        if last or (cfg.val_loss_every and tr.step % cfg.val_loss_every == 0):
            rt.sync()
            tr.train_ms += 1000.0 * (time.perf_counter() - t0)
            tr.validate()
            rt.sync()
            t0 = time.perf_counter()
        if last:
            break
        elapsed = tr.train_ms + 1000.0 * (time.perf_counter() - t0)
        if rt.distributed and cap_ms > 0:
            elapsed = rt.all_max(elapsed)  # one clock for all ranks: same LR, same stop
        mult = lr_multiplier(cfg, tr.step, elapsed)
        frac = train_fraction(cfg, tr.step, elapsed)
        tr.opt.set_wd_multiplier(wd_multiplier(cfg, frac))
        if cfg.num_loops and not tr.model.looping and frac >= cfg.loop_start_frac:
            tr.model.set_looping(True)
            enc, dec = layer_order(tr.model.config, True)
            log(f"layer_loop:enabled step:{tr.step} frac:{frac:.3f} encoder:{enc} "
                f"decoder:{dec}")
        if tr.qat is not None and not tr.qat.on and mult <= cfg.qat_start_lr_mult:
            tr.qat.set(True)
            log(f"qat:enabled at_step:{tr.step} lr_mult:{mult:.4f} scheme:{cfg.qat_spec}")
        tr.train_step(mult, poison=(tr.step + 1 == nan_at))
        elapsed = tr.train_ms + 1000.0 * (time.perf_counter() - t0)
        if rt.distributed and cap_ms > 0:
            elapsed = rt.all_max(elapsed)
        stop = cap_ms > 0 and elapsed >= cap_ms
        final_step = tr.step >= cfg.iterations or stop
        log_now = (cfg.train_log_every and tr.step % cfg.train_log_every == 0) or \
            tr.step <= 10 or final_step
        ckpt_now = cfg.checkpoint_every and tr.step % cfg.checkpoint_every == 0
        if not cuda or log_now or ckpt_now or final_step:
            tr.check_finite()
        if log_now:
            loss = tr.flush_losses()
            avg = elapsed / tr.step
            tok_s = tr.step * cfg.train_batch_tokens / max(elapsed / 1000.0, 1e-9)
            log(train_line(tr.step, cfg.iterations, loss, elapsed, avg, tok_s))
        if ckpt_now and not final_step:
            rt.sync()
            tr.train_ms += 1000.0 * (time.perf_counter() - t0)
            tr.save_checkpoint()
            t0 = time.perf_counter()
        if kill_at and tr.step == kill_at:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
    if stop:
        log(stop_line(tr.train_ms, tr.step, cfg.iterations))
    tr.stopped_early = stop
    return stop


def train(cfg: TrainConfig, data_dir, tokenizer, out_dir, resume: bool = False,
          force: bool = False, echo: bool = True, threads: int | None = None) -> TrainResult:
    """Run (or resume) one training run and its end-of-run export and scoring; `threads`
    sets this process's CPU threads (None leaves them as they are)."""
    if threads is not None:
        if threads < 1:
            raise GolfError(f"threads must be >= 1 (got {threads})")
        torch.set_num_threads(threads)
    rt = init_runtime(cfg.device)
    try:
        return _train(cfg, data_dir, tokenizer, os.fspath(out_dir), resume, force, echo, rt)
    finally:
        shutdown(rt)


def _train(cfg, data_dir, tokenizer, out_dir, resume, force, echo, rt) -> TrainResult:
    cfg = resolve_vocab(cfg, tokenizer)
    cfg.micro_layout(rt.world)
    had_run = resume_mod.check_out_dir(out_dir, resume, force)
    found = ckpt.latest_state(out_dir) if resume else None
    tr = Trainer(cfg, data_dir, tokenizer, out_dir, rt)  # every input checked, nothing written
    resume_mod.clear_out_dir(out_dir, rt, clear=had_run and not resume)
    log = tr.log = TrainLog(os.path.join(out_dir, "train.log"), enabled=rt.is_main,
                            echo=echo, append=found is not None)
    try:
        log(f"config_json:{json.dumps(cfg.to_dict(), sort_keys=True)}")
        if found is None:
            for line in run_header(tr, data_dir):
                log(line)
        tr.warmup()
        if found is not None:
            path, tensors, meta, skipped = found
            for s in skipped:
                log(f"resume_skipped_unreadable: {s}")
            tr.restore(path, tensors, meta)
            log(f"resumed_from_checkpoint:{path} at_step:{tr.step} "
                f"train_time:{tr.train_ms:.0f}ms")
        elif resume:
            log("resume: no checkpoint yet; starting from the beginning")
        if not tr.finished:
            run_loop(tr)
            tr.finished = True
            if cfg.checkpoint_every:
                tr.save_checkpoint()
        tr.flush_losses()
        if rt.device.type == "cuda":
            log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB "
                f"reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB")
        final = finish.finish_run(tr)
        result = TrainResult(out_dir, tr.step, tr.train_ms, tr.stopped_early, tr.losses,
                             tr.val_history, final)
        finish.write_summary(tr, result)
        return result
    finally:
        log.close()
