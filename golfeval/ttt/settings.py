"""Front door of test-time training: settings from command-line options, one call that runs
either kind, and the report fields `golfeval score --ttt` adds.

The two kinds live in golfeval.ttt.lora (per-document LoRA) and golfeval.ttt.sgd (chunked
SGD of the whole model); both are score-first by construction (golfeval.ttt.fingerprint).
"""

from __future__ import annotations

from contextlib import contextmanager

from golfpack.errors import GolfError

KINDS = ("lora", "sgd")
TIMER = ("scoring and adapting every chunk on this rank (model loading, data reading, byte "
         "tables and the pre-TTT evaluation excluded; there is no warm-up)")


def make_settings(kind: str, *, rank=None, chunk=None, lr=None, epochs=None, targets=None,
                  seq_len: int = 1024, stride: int = 64, batch=None):
    """LoraSettings or SGDSettings from CLI-style options (None = the kind's default).
    seq_len is the LoRA context window and the SGD scoring/training length."""
    if kind == "lora":
        from golfeval.ttt.lora import LoraSettings

        if epochs is not None:
            raise GolfError("--ttt-epochs applies to --ttt sgd (LoRA takes one step per chunk)")
        kw = {"rank": rank, "chunk": chunk, "lr": lr, "batch": batch,
              "targets": tuple(targets.split(",")) if isinstance(targets, str) else targets}
        return LoraSettings(context=seq_len, **{k: v for k, v in kw.items() if v is not None})
    if kind == "sgd":
        from golfeval.ttt.sgd import SGDSettings

        if rank is not None or targets is not None:
            raise GolfError("--ttt-rank/--ttt-targets apply to --ttt lora")
        kw = {"chunk_tokens": chunk, "lr": lr, "epochs": epochs, "score_batch": batch}
        return SGDSettings(seq_len=seq_len, stride=stride,
                           **{k: v for k, v in kw.items() if v is not None})
    raise GolfError(f"unknown TTT kind {kind!r} (lora or sgd)")


def run_ttt(model, tokens, target_bytes, settings, **kw):
    """evaluate_lora or evaluate_sgd, whichever the settings are for -> ScoreResult.
    Runs the model eager: a torch.compile'd forward (golfeval.score.modelio.compile_model) is
    set aside for the call, since adapters hook into modules and training re-enters it."""
    from golfeval.ttt.lora import LoraSettings, evaluate_lora
    from golfeval.ttt.sgd import evaluate_sgd

    settings = resolve(settings, kw.get("device", "cpu"))
    with eager(model):
        if isinstance(settings, LoraSettings):
            kw.pop("doc_isolation", None)  # LoRA documents are isolated by construction
            return evaluate_lora(model, tokens, target_bytes, settings, **kw)
        return evaluate_sgd(model, tokens, target_bytes, settings, **kw)


def resolve(settings, device):
    """Settings with device-dependent defaults filled in (what the report should show)."""
    from golfeval.ttt.lora import LoraSettings
    from golfeval.ttt.lora import resolve as resolve_lora

    return resolve_lora(settings, device) if isinstance(settings, LoraSettings) else settings


@contextmanager
def eager(model):
    """Hide instance-level compiled `hidden`/`forward` (class methods take over)."""
    saved = {k: model.__dict__.pop(k) for k in ("hidden", "forward") if k in model.__dict__}
    try:
        yield model
    finally:
        model.__dict__.update(saved)


def report_fields(pre: dict, post, settings) -> dict:
    """What `golfeval score --ttt` adds to (and overrides in) its JSON report: `pre` is the
    plain score's report, `post` the TTT ScoreResult."""
    kind = settings.to_dict()["kind"]
    post_fields = {k: v for k, v in post.to_dict().items() if k != "windows"}
    return {**post_fields, "label": label(kind), "ttt": settings.to_dict(),
            "pre_ttt_bpb": pre["val_bpb"], "pre_ttt_loss": pre["val_loss"],
            "pre_ttt_seconds": pre["seconds"], "ttt_gain_bpb": post.val_bpb - pre["val_bpb"],
            "ttt_seconds": post.seconds, "ttt_timer": TIMER}


def label(kind: str) -> str:
    """Challenge-style result-line label (log parsers know both)."""
    return {"lora": "final_ttt_lora_exact", "sgd": "legal_ttt_exact"}[kind]
