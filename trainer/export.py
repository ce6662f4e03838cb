"""The GPTQ export inside the run's wall clock: Hessians of the final weights on training
tokens (never validation), then golfpack's Hessian GPTQ with the export's schemes (SDClip
or any other clip rule the spec names), encoded as the usual artifact.

Training stops `gptq_reserve_seconds` before `max_wallclock_seconds`, so the calibration and
the quantization run inside the cap; their time is measured and logged against it.
"""

from __future__ import annotations

import time

import torch

from trainer.model import GPT


def calibration_batches(stream, n_batches: int, batch_tokens: int, seq_len: int,
                        offset: int) -> list[torch.Tensor]:
    """`n_batches` [rows, seq_len] batches read from the training stream at `offset`
    (reading does not move the stream, so a resumed run is unaffected)."""
    rows = max(1, batch_tokens // seq_len)
    flat = stream.read(offset, n_batches * rows * seq_len)
    return list(torch.from_numpy(flat).view(n_batches, rows, seq_len).unbind(0))


def gptq_export(tr, sd: dict, model_cfg: dict, spec: str | None, files: list[str]):
    """-> (artifact bytes, report, log lines). Runs on one process (rank 0)."""
    from golfpack.accounting import code_bytes
    from golfpack.hessian.calib import collect_hessians
    from golfpack.hessian.pipeline import compress_hessian
    from trainer.finish import BUDGET

    cfg, rt = tr.cfg, tr.rt
    t0 = time.perf_counter()
    code = code_bytes(files, cfg.code_mode)
    model = GPT(model_cfg).to(rt.device)
    model.load_state_dict(sd)
    batches = calibration_batches(tr.stream, cfg.gptq_calibration_batches,
                                  cfg.gptq_batch_tokens, cfg.train_seq_len,
                                  tr.stream.position)
    n_tok = sum(b.numel() for b in batches)
    hessians = collect_hessians(model, batches,
                                source=f"training stream ({len(batches)}x{batches[0].numel()} "
                                       "tokens)")
    rt.sync()
    t1 = time.perf_counter()
    del model
    blob, report = compress_hessian(sd, model_cfg, hessians, BUDGET, code, spec=spec,
                                    codec=cfg.export_codec, tokenizer=tr.tokenizer)
    t2 = time.perf_counter()
    export_ms = 1000.0 * (t2 - t0)
    gptq = report.get("gptq", {})
    lines = [f"GPTQ:collected {len(hessians.H)} Hessians in {t1 - t0:.1f}s",
             f"gptq:calibration batches:{len(batches)} tokens:{n_tok} source:train "
             f"hessians:{len(hessians.H)} time:{1000.0 * (t1 - t0):.0f}ms",
             f"gptq:quantized tensors:{gptq.get('tensors', 0)} "
             f"fallbacks:{len(gptq.get('fallbacks', {}))} time:{1000.0 * (t2 - t1):.0f}ms"]
    if cfg.max_wallclock_seconds > 0:
        cap = 1000.0 * cfg.max_wallclock_seconds
        total = tr.train_ms + export_ms
        lines.append(f"gptq:export_time:{export_ms:.0f}ms "
                     f"reserve:{1000.0 * cfg.gptq_reserve_seconds:.0f}ms "
                     f"train_time:{tr.train_ms:.0f}ms total:{total:.0f}ms cap:{cap:.0f}ms "
                     f"within_cap:{'yes' if total <= cap else 'no'}")
    else:
        lines.append(f"gptq:export_time:{export_ms:.0f}ms")
    report["gptq_export_ms"] = export_ms
    return blob, report, lines
