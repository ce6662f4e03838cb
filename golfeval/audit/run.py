"""The audit behind `golfeval audit`: load the model (the loader `score` uses) and the
validation tokens, build the evaluation mode, and run the causality test on it."""

from __future__ import annotations

import os

from golfpack.errors import GolfError, Note

DEFAULT_MAX_TOKENS = 65_536


def audit_model(*, artifact=None, checkpoint=None, config=None, model_spec=None, data,
                tokenizer, mode, positions=8, max_tokens=DEFAULT_MAX_TOKENS, seq_len=1024,
                stride=64, batch=4, doc_isolation=False, device="cpu", seed=0, atol=0.0,
                ttt=None, force=False, on_cut=None, warn=None, leaks=True, sweeps=None):
    """Load the model and validation tokens, then run_audit -> (AuditReport, info dict).
    `leaks`: also the normalization / target-independence / document-isolation checks
    (`sweeps` candidate sweeps of vocab-size evaluations each)."""
    from golfeval.audit.causality import AuditConfig, build_mode, run_audit
    from golfeval.data.bytetables import ByteTables
    from golfeval.data.shards import load_tokens
    from golfeval.score import modelio
    from golfeval.score.distributed import resolve_device

    if max_tokens is not None and max_tokens < 3:
        raise GolfError("`max_tokens` must be at least 3", param="max_tokens")
    if positions < 1:
        raise GolfError("`positions` must be at least 1", param="positions")
    dev = resolve_device(device)
    if dev.type == "cuda":
        deterministic_cuda()
    tables = ByteTables.from_tokenizer(tokenizer)
    loaded, _, _ = modelio.load_for_tokenizer(
        artifact=artifact, checkpoint=checkpoint, model_spec=model_spec, config=config,
        device=dev, tokenizer=tokenizer, force=force, warn=warn, action="audit")
    tokens = load_tokens(data, "val", vocab_size=tables.vocab_size, max_tokens=max_tokens)
    cfg = AuditConfig(seq_len=seq_len, stride=stride, batch=batch, device=str(dev),
                      doc_isolation=doc_isolation, ttt=ttt)
    audit_mode = build_mode(mode, loaded.model, cfg)
    if mode == "sgd" and tokens.size - 1 <= cfg.ttt.chunk_tokens and warn:
        warn(Note(f"{tokens.size:,} tokens make one SGD chunk, so no adaptation is exercised; "
                  "pass a smaller `ttt_chunk` or a larger `max_tokens`",
                  param=("ttt_chunk", "max_tokens")))
    if mode == "phased" and warn:
        from golfeval.ttt.lora import split_documents
        from golfeval.ttt.phased import phase_boundaries

        n_docs = int(split_documents(tokens, cfg.bos_id)[0].size)
        if not phase_boundaries(n_docs, cfg.ttt.phases):
            warn(Note(f"{n_docs:,} documents leave no phase boundary inside the stream, so "
                      "no global step is exercised; pass smaller `ttt_phases`",
                      param="ttt_phases"))
    report = run_audit(audit_mode, tokens, tables.target_bytes, tables.vocab_size,
                       positions=positions, seed=seed, atol=atol, on_cut=on_cut,
                       bos_id=cfg.bos_id, leaks=leaks, sweeps=sweeps, check_len=seq_len)
    info = {"model": loaded.path, "device": str(dev), "data": os.fspath(data),
            "settings": ttt.to_dict() if ttt is not None else
            {"seq_len": seq_len, "stride": stride if mode != "flat" else None}}
    return report, info


def deterministic_cuda() -> None:
    """Bitwise comparisons on a GPU need deterministic kernels: cuBLAS with a fixed
    workspace and no atomics-based backward passes (where torch has an alternative)."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
