"""End of a run: the final checkpoint, golfpack compression (code bytes of the trainer's own
source counted), and golfeval scoring of the round-tripped weights, flat and sliding; then the
challenge's size and final-metric lines and OUT/summary.json.

Scoring reads the artifact back from disk, so the reported score is that of the bytes that
would be submitted, not of the weights still in memory.
"""

from __future__ import annotations

import glob
import json
import os
import time

import torch

from golfpack import checkpoint as gcheckpoint
from golfpack.fileio import atomic_write_bytes
from trainer.qat import dominant_scheme, expand_spec
from trainer.trainlog import final_lines, size_lines

BUDGET = 16_000_000
# Trainer modules and folders that are tooling around the training program, not part of it.
NOT_PROGRAM = {"cli", "demo.py", "params.py"}


def code_files(gptq: bool = False) -> list[str]:
    """The source a submission of this trainer ships: the trainer package's modules (minus
    its CLI wrappers) and golfpack's quantizer, which QAT and the export share; with the
    GPTQ export also golfpack's calibration and GPTQ modules, which run inside the run."""
    here = os.path.dirname(os.path.abspath(__file__))
    skip = NOT_PROGRAM if gptq else NOT_PROGRAM | {"export.py"}
    files = sorted(p for p in glob.glob(os.path.join(here, "**", "*.py"), recursive=True)
                   if os.path.relpath(p, here).split(os.sep)[0] not in skip)
    import golfpack.quant.rows

    files.append(os.path.abspath(golfpack.quant.rows.__file__))
    if gptq:
        import golfpack.hessian.calib
        import golfpack.hessian.gptq

        files += [os.path.abspath(golfpack.hessian.calib.__file__),
                  os.path.abspath(golfpack.hessian.gptq.__file__)]
    return files


def score(model, tokens, target_bytes, cfg, rt, mode: str = "flat"):
    """golfeval's scorer over this rank's share of the windows; it all-reduces the float64
    sums across ranks and runs bf16 autocast on CUDA itself."""
    from golfeval.score.core import score_tokens

    seq = cfg.effective_eval_seq_len
    batch = max(1, cfg.val_batch_tokens // (seq * rt.world))
    return score_tokens(model, tokens, target_bytes, mode=mode, seq_len=seq,
                        stride=cfg.eval_stride, batch=batch, device=rt.device,
                        rank=rt.rank, world=rt.world)


def final_state_dict(tr) -> dict[str, torch.Tensor]:
    """The weights the run ends with: EMA when on, else the live weights (float32, CPU)."""
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in
          tr.model.state_dict().items()}
    if tr.ema is not None:
        sd.update({k: v.detach().to("cpu", torch.float32).clone()
                   for k, v in tr.ema.weights().items()})
    return sd


def export_spec(cfg) -> str | None:
    """The golfpack scheme spec of the export: export_scheme, else the QAT spec, else
    golfpack's default (None)."""
    text = cfg.export_scheme.strip() or (cfg.qat_spec if cfg.qat_enabled else "")
    return expand_spec(text) if text else None


def size_tag(model, spec: str | None, report: dict) -> str:
    """The size-line tag, e.g. int6+brotli: the largest weight's scheme and the codec of the
    artifact's largest stream."""
    from golfpack.quant.scheme import DEFAULT_SPEC

    streams = report.get("streams") or []
    codec = max(streams, key=lambda s: s.get("bytes", 0)).get("codec") if streams else None
    codec = str(codec or report.get("codec") or "packed")
    return f"{dominant_scheme(model, spec or DEFAULT_SPEC)}+{codec}"


def finish_run(tr) -> dict:
    cfg, rt, log, out = tr.cfg, tr.rt, tr.log, tr.out_dir
    sd = final_state_dict(tr)
    model_cfg = cfg.model_config()
    final_ckpt = os.path.join(out, "final.safetensors")
    if rt.is_main:
        gcheckpoint.save(final_ckpt, sd, model_cfg, force=True)
    rt.barrier()
    result = {"checkpoint": final_ckpt, "raw_bytes": os.path.getsize(final_ckpt)}
    if not cfg.final_eval:
        return result
    spec = export_spec(cfg)
    artifact_path = os.path.join(out, "final.golf")
    tag = ""
    if rt.is_main:
        from golfpack.compress import compress_state_dict

        files = code_files(gptq=cfg.gptq)
        if cfg.gptq:
            from trainer.export import gptq_export

            blob, report, lines = gptq_export(tr, sd, model_cfg, spec, files)
            for line in lines:
                log(line)
        else:
            blob, report = compress_state_dict(sd, model_cfg, scheme_spec=spec,
                                               codec=cfg.export_codec, code_files=files,
                                               code_mode=cfg.code_mode, budget=BUDGET,
                                               tokenizer=tr.tokenizer)
        atomic_write_bytes(artifact_path, blob, force=True)
        tag = size_tag(tr.model, spec, report)
        code = int(report["code_bytes"])  # the golf decoder included (golfpack.decoder)
        dec = int(report.get("decoder_bytes", 0))
        raw_code = code - dec  # the raw checkpoint needs no golf decoder
        for line in size_lines("", result["raw_bytes"], raw_code, result["raw_bytes"] + raw_code):
            log(line)
        log(f"golf decoder: {dec} bytes ({cfg.code_mode}), counted in the code size below")
        for line in size_lines(tag, int(report["model_bytes"]), code,
                               int(report["total_bytes"])):
            log(line)
        total = int(report["total_bytes"])
        log(f"budget:{total}/{BUDGET} {'FITS' if total <= BUDGET else 'OVER'}")
        result.update(artifact=artifact_path, tag=tag, model_bytes=int(report["model_bytes"]),
                      code_bytes=code, decoder_bytes=dec, total_bytes=total,
                      fits=total <= BUDGET)
    rt.barrier()
    from golfpack.artifact import load_artifact

    dq = load_artifact(artifact_path).state_dict()
    model = gcheckpoint.build_model(dict(model_cfg), dq).to(rt.device)
    label = "final_" + (tag.replace("+", "_").replace("-", "_") if tag else "quantized")
    modes = [("flat", label + "_roundtrip", "")]
    if cfg.final_sliding:
        modes.append(("sliding", "final_sliding_window",
                      f"stride:{cfg.eval_stride} eval_seq_len:{cfg.effective_eval_seq_len}"))
    for mode, name, extras in modes:
        rt.sync()
        t0 = time.perf_counter()
        res = score(model, tr.val_tokens, tr.val_bytes, cfg, rt, mode=mode)
        rt.sync()
        ms = 1000.0 * (time.perf_counter() - t0)
        for line in final_lines(name, res.val_loss, res.val_bpb, ms, extras):
            log(line)
        result[mode] = {"label": name, "val_loss": float(res.val_loss),
                        "val_bpb": float(res.val_bpb), "eval_time_ms": ms}
    return result


def write_summary(tr, result) -> None:
    if not tr.rt.is_main:
        return
    cfg = tr.cfg
    secs = max(result.train_time_ms / 1000.0, 1e-9)
    summary = {
        "config": cfg.to_dict(), "world_size": tr.rt.world, "steps": result.steps,
        "train_time_ms": result.train_time_ms, "stopped_early": result.stopped_early,
        "tokens_per_s": result.steps * cfg.train_batch_tokens / secs,
        "step_avg_ms": result.train_time_ms / max(result.steps, 1),
        "train_losses": result.train_losses, "val_history": result.val_history,
        "final": result.final,
    }
    atomic_write_bytes(os.path.join(tr.out_dir, "summary.json"),
                       json.dumps(summary, indent=1, allow_nan=True).encode(), force=True)
