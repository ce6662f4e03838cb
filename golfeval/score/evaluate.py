"""The whole evaluation behind `golfeval score`: load the model and tokenizer, check them
against each other and the data, pick the byte source, score (and test-time train), and
return the report. The CLI only parses options and prints."""

from __future__ import annotations

import io
import math
import os
import sys
import time

from golfpack.errors import GolfError, NonFiniteError


def default_batch(device_type: str) -> int:
    # CPU: one 1024-token window already keeps the cores busy and its activations stay in
    # cache (batch 4 is ~8% and batch 32 ~50% slower per window); GPU: fill the device.
    return 32 if device_type == "cuda" else 1


def final_label(mode: str, source: str) -> str:
    """The challenge-style label of the result line (so log parsers read it)."""
    if mode == "sliding":
        return "final_sliding_window_exact"
    if mode == "sliding-record":  # the records' own rule (golfeval.score.recordmode)
        return "final_sliding_window_record"
    return "final_roundtrip_exact" if source == "artifact" else "final_flat_exact"


def _sidecars_for(data, sidecar, no_sidecar: bool) -> list[str]:
    from golfeval.data.shards import find_sidecars

    if no_sidecar:
        return []
    if sidecar is not None:
        found = find_sidecars(sidecar) if os.path.isdir(sidecar) else [os.fspath(sidecar)]
        if not found or not all(os.path.isfile(p) for p in found):
            raise GolfError(f"{sidecar}: no byte sidecars (fineweb_val_bytes_*.bin) there")
        return found
    directory = data if os.path.isdir(data) else os.path.dirname(os.fspath(data)) or "."
    return find_sidecars(directory)


def _check_sidecar_shapes(shard_paths, sidecar_paths) -> None:
    from golfeval.data.shards import read_header

    if len(sidecar_paths) != len(shard_paths):
        raise GolfError(f"{len(sidecar_paths)} byte sidecar(s) for {len(shard_paths)} val "
                        "shard(s); they must pair up")
    for shard, side in zip(shard_paths, sidecar_paths, strict=True):
        if read_header(shard) != read_header(side):
            raise GolfError(f"{side} does not have one entry per token of {shard}")


def evaluate(*, artifact=None, checkpoint=None, data, tokenizer, mode="sliding",
             seq_len=1024, stride=64, batch=None, max_tokens=None, doc_isolation=False,
             model_spec=None, config=None, device="auto", per_token_path=None, force=False,
             sidecar=None, no_sidecar=False, compile_model=None, progress=False,
             warn=None, ttt=None, trust_arch=False, eval_budget=None) -> dict:
    """Load, check, score; returns the report (per-token file written on rank 0).

    `eval_seconds` is the wall time of the whole evaluation (process group, model load,
    data and byte tables, compile warm-up on random tokens, scoring, TTT), the slowest
    rank's; `timing` splits it; with `eval_budget` the report says whether it fit."""
    clock = _Clock()
    from golfeval.data.bytetables import ByteTables, sidecar_target_bytes
    from golfeval.data.shards import find_shards, load_tokens
    from golfeval.score import distributed, modelio
    from golfeval.score.core import score_tokens

    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    if max_tokens is not None and max_tokens < 2:
        raise GolfError("`max_tokens` must be at least 2 (one target)", param="max_tokens")
    if per_token_path is not None and mode == "sliding-record":
        raise GolfError("`per_token_path` writes exact per-target losses: use `mode=sliding` "
                        "(sliding-record counts some targets several times)",
                        param=("per_token_path", "mode"))
    if per_token_path is not None:
        _check_output(per_token_path, [artifact, checkpoint, tokenizer], force)
    ctx = distributed.init(device)
    try:
        loaded, tok_sha, tok_vocab = modelio.load_for_tokenizer(
            artifact=artifact, checkpoint=checkpoint, model_spec=model_spec, config=config,
            device=ctx.device, tokenizer=tokenizer, force=force, warn=warn,
            trust_arch=trust_arch)
        clock.lap("load_s")
        shard_paths = find_shards(data, "val")
        tokens = load_tokens(data, "val", max_tokens=max_tokens)
        hi = int(tokens.max()) if tokens.size else 0
        if hi >= loaded.vocab_size:
            raise GolfError(f"token id {hi} in {data} is outside the model's "
                            f"{loaded.vocab_size}-token vocabulary")
        sidecars = _sidecars_for(data, sidecar, no_sidecar)
        if sidecars:
            if max_tokens is None:
                _check_sidecar_shapes(shard_paths, sidecars)
            target_bytes, source = sidecar_target_bytes(sidecars, tokens.size), "sidecar"
        else:
            tables = ByteTables.from_tokenizer(tokenizer)
            target_bytes, source = tables.target_bytes(tokens), "tables"
        if compile_model is None:  # 2.9x on an H100; compiling costs seconds, not minutes
            compile_model = ctx.device.type == "cuda"
        clock.lap("data_s")
        batch = batch or default_batch(ctx.device.type)
        if compile_model:
            modelio.compile_model(loaded.model)
            step = stride if mode in ("sliding", "sliding-record") else seq_len
            warm_up(loaded.model, loaded.vocab_size,
                    min(int(tokens.size), seq_len + (batch + 1) * step + 1),
                    mode="sliding" if mode == "sliding-record" else mode, seq_len=seq_len,
                    stride=stride, batch=batch, doc_isolation=doc_isolation, device=ctx.device)
        clock.lap("warmup_s")
        record_cmp = None
        if mode == "sliding-record":  # the records' rule beside the exact sliding score
            from golfeval.score.recordmode import score_record_sliding

            result, _, record_cmp = score_record_sliding(
                loaded.model, tokens, target_bytes, seq_len=seq_len, stride=stride,
                batch=batch, doc_isolation=doc_isolation, device=ctx.device, rank=ctx.rank,
                world=ctx.world, progress=progress and ctx.is_main)
        else:
            result = score_tokens(
                loaded.model, tokens, target_bytes, mode=mode, seq_len=seq_len,
                stride=stride, batch=batch, doc_isolation=doc_isolation, device=ctx.device,
                rank=ctx.rank, world=ctx.world, per_token=per_token_path is not None,
                progress=progress and ctx.is_main)
        clock.lap("score_s")
        if result.bytes_sum == 0:
            raise GolfError("the scored targets hold no bytes; nothing to divide by")
        report = {
            **{k: v for k, v in result.to_dict().items()},
            "label": final_label(mode, loaded.source),
            "mode": mode, "seq_len": seq_len,
            "stride": stride if mode in ("sliding", "sliding-record") else None,
            "doc_isolation": doc_isolation, "batch": batch, "device": str(ctx.device),
            "amp": "bf16" if ctx.device.type == "cuda" else "off", "compiled": compile_model,
            "tokens": int(tokens.size), "bytes_source": source,
            "model": {"source": loaded.source, "path": loaded.path, "arch": loaded.arch,
                      "vocab_size": loaded.vocab_size, "notes": loaded.notes,
                      "protocol": loaded.protocol},
            "tokenizer": {"path": os.fspath(tokenizer), "sha256": tok_sha,
                          "vocab_size": tok_vocab,
                          "matches_model": (None if not loaded.tokenizer_sha256
                                            else loaded.tokenizer_sha256 == tok_sha)},
            "is_main": ctx.is_main,
        }
        if record_cmp is not None:
            report["record_comparison"] = record_cmp
        # --- test-time training (golfeval.ttt.settings): `result` above is the pre-TTT score ---
        if ttt is not None:
            from golfeval.ttt import settings as ttt_mod

            ttt = ttt_mod.resolve(ttt, ctx.device)
            result = ttt_mod.run_ttt(loaded.model, tokens, target_bytes, ttt,
                                     device=ctx.device, rank=ctx.rank, world=ctx.world,
                                     per_token=per_token_path is not None,
                                     progress=progress and ctx.is_main,
                                     doc_isolation=doc_isolation)
            report.update(ttt_mod.report_fields(pre=report, post=result, settings=ttt))
        clock.lap("ttt_s")
        # --- end test-time training ---
        for key in ("val_loss", "val_bpb"):  # the last guard: a NaN is never a score
            if not math.isfinite(report[key]):
                raise NonFiniteError(f"{key} is {report[key]}: the model's loss is not finite")
        report.update(clock.report(ctx.world, eval_budget))
        if per_token_path is not None and ctx.is_main:
            _write_per_token(per_token_path, result.per_token_nats, target_bytes, force)
            report["per_token"] = os.fspath(per_token_path)
        return report
    finally:
        distributed.shutdown(ctx)


class _Clock:
    """Laps of the evaluation's wall time (perf_counter), for the report's `timing`."""

    def __init__(self):
        self.t0 = self.last = time.perf_counter()
        self.laps = dict.fromkeys(("startup_s", "load_s", "data_s", "warmup_s", "score_s",
                                   "ttt_s"), 0.0)
        self.laps["startup_s"] = process_age()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] += now - self.last
        self.last = now

    def report(self, world: int, budget) -> dict:
        total = _slowest(time.perf_counter() - self.t0 + self.laps["startup_s"], world)
        out = {"eval_seconds": total, "timing": {**self.laps, "total_s": total},
               "eval_timer": "wall time from the start of the process (interpreter and "
                             "imports: startup_s) through the process group, model load, "
                             "data, compile warm-up on random tokens, scoring and, with "
                             "TTT, the pre-TTT pass and the TTT pass to the final score, "
                             "on the slowest rank"}
        if budget is not None:
            out.update(eval_budget=float(budget), within_budget=total <= budget)
        return out


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0.0 where unavailable), so the
    budget also counts the interpreter start and imports before the evaluation begins."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _slowest(seconds: float, world: int) -> float:
    """The largest value over the ranks of a running process group."""
    if world <= 1:
        return seconds
    import torch
    import torch.distributed as dist

    from golfeval.score import distributed

    if distributed.active_world() != world:
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64, device=distributed._reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def warm_up(model, vocab_size: int, n_tokens: int, *, mode, seq_len, stride, batch,
            doc_isolation, device) -> float:
    """Run the scorer once on `n_tokens` seeded random tokens (BOS first), so that a
    compiled model compiles before it sees validation tokens; the model must come out
    unchanged (checked). Returns the seconds it took."""
    import numpy as np

    from golfeval.score.core import score_tokens
    from golfeval.ttt.fingerprint import state_tensors, unchanged

    t0 = time.perf_counter()
    if n_tokens < 2:
        return 0.0
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, max(3, vocab_size), n_tokens).astype(np.int64)
    tokens[0] = 1
    with unchanged(lambda: state_tensors(model), "the compile warm-up"):
        score_tokens(model, tokens, np.ones(n_tokens - 1, dtype=np.int64), mode=mode,
                     seq_len=seq_len, stride=stride, batch=batch, doc_isolation=doc_isolation,
                     device=device)
    return time.perf_counter() - t0


def _check_output(path, inputs, force: bool) -> None:
    from golfpack.fileio import refuse_existing, refuse_same_file

    for inp in inputs:
        if inp is not None and os.path.exists(inp):
            refuse_same_file(inp, path)
    refuse_existing(path, force)


def _write_per_token(path, nats, target_bytes, force: bool) -> None:
    import numpy as np

    from golfpack.fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, nats=nats, bytes=np.asarray(target_bytes, dtype=np.int64))
    atomic_write_bytes(path, buf.getvalue(), force=force)
