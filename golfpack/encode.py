"""The encode path a submission runs at the end of training, kept small because a bundle
carries (and the submission counts) every golf function it reaches (golfpack.closure).

    from golfpack.encode import encode_state_dict, save_artifact
    data = encode_state_dict(model.state_dict(), config, scheme_spec="*=int6", codec="ans")
    save_artifact("final_model.golf", data)

The bytes are exactly those of `golfpack.compress.compress_state_dict` /
`golfpack.artifact.encode_artifact` for the same inputs (the same quantizer, planner and
writer run); what is left out is the part only a report needs: the read-back of the
header, the per-tensor accounting and the decoder-cost figures. A submission that wants the
read-back runs the decoder its bundle already carries (`golf_decode.load`), or
`golfpack inspect` on the file. Which functions a bundle carries follows from which of these
the script calls:
  encode_state_dict          any codec ("auto", "ans", or a general one): the ans coder and
                             every general codec come along (a computed name cannot be
                             pruned), ~12 KB wrapped;
  encode_state_dict_general  zstd, brotli, lzma or zlib only: no ans coder (about half).
`codec="auto"` here chooses by stored bytes alone, as encode_artifact does when no decoder
mode is given; compress_state_dict's default (auto net of each codec's decoder cost) needs
the decoder template and is not part of this lean path.
"""

from __future__ import annotations


def encode_state_dict(state_dict, config: dict, *, scheme_spec: str | None = None,
                      codec: str = "ans", tokenizer=None) -> bytes:
    """Quantize + encode `state_dict` -> artifact bytes (any codec golfpack writes)."""
    from golfpack.ans.codec import Layout
    from golfpack.artifact import assemble, plan_streams
    from golfpack.errors import ArtifactError
    from golfpack.format.codecs import CHOICES, finish_plans, plan_stream
    from golfpack.quant.qmodel import quantize_entries

    if codec not in CHOICES:
        raise ArtifactError(f"unknown codec {codec!r} (use one of {', '.join(CHOICES)})")
    entries = quantize_entries(state_dict, scheme_spec)
    keys, refs, plans = plan_streams(entries, codec, plan_stream, Layout)
    return assemble(entries, config, tokenizer, keys, refs, finish_plans(plans))[0]


def encode_state_dict_general(state_dict, config: dict, *, scheme_spec: str | None = None,
                              codec: str = "zstd", tokenizer=None) -> bytes:
    """encode_state_dict for a general-purpose codec (zstd, brotli, lzma, zlib): the same
    bytes, and a bundle that carries no ans coder."""
    from golfpack.artifact import assemble, plan_streams
    from golfpack.errors import ArtifactError
    from golfpack.format.codecs import GENERAL, plan_general_stream
    from golfpack.quant.qmodel import quantize_entries

    if codec not in GENERAL:
        raise ArtifactError(f"unknown general codec {codec!r} (use one of "
                            f"{', '.join(GENERAL)}; ans and auto: encode_state_dict)")
    entries = quantize_entries(state_dict, scheme_spec)
    keys, refs, plans = plan_streams(entries, codec, plan_general_stream)
    return assemble(entries, config, tokenizer, keys, refs, [p.general for p in plans])[0]


def save_artifact(path, data: bytes, *, force: bool = False) -> int:
    """Write artifact bytes atomically (an existing file only with `force`) -> bytes written."""
    from golfpack.fileio import atomic_write_bytes

    atomic_write_bytes(path, data, force=force)
    return len(data)
