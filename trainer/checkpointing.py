"""Training-state checkpoints for --resume: one safetensors file per checkpoint holding every
tensor (weights, EMA, optimizer state, RNG states) plus the rest as JSON in its metadata (step,
elapsed training time, stream position, QAT state, config, loss history). Never pickle.

Each file is written to a temporary name, fsynced and renamed, so a checkpoint either exists
whole or not at all; a run killed mid-write leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import re

import torch

from golfpack.errors import CheckpointError

FORMAT = "golftrain-state/1"
META_KEY = "golftrain_state"
_NAME = re.compile(r"^step_(\d{7})\.safetensors$")


def checkpoint_dir(out_dir) -> str:
    return os.path.join(os.fspath(out_dir), "checkpoints")


def checkpoint_path(out_dir, step: int) -> str:
    return os.path.join(checkpoint_dir(out_dir), f"step_{step:07d}.safetensors")


def list_checkpoints(out_dir) -> list[tuple[int, str]]:
    """(step, path) of every checkpoint file, oldest first."""
    d = checkpoint_dir(out_dir)
    if not os.path.isdir(d):
        return []
    found = []
    for name in os.listdir(d):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(d, name)))
    return sorted(found)


def pack_optimizers(state_dicts: list[dict], names: list[list[str]]):
    """Flatten optimizer state dicts into name-keyed tensors + JSON-able rest."""
    tensors, meta = {}, []
    for i, (sd, pnames) in enumerate(zip(state_dicts, names, strict=True)):
        scalars: dict[str, dict] = {}
        for idx, entries in sd["state"].items():
            pname = pnames[idx]
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{i}/{pname}/{key}"] = value
                else:
                    scalars.setdefault(pname, {})[key] = value
        meta.append({"param_groups": sd["param_groups"], "names": pnames, "scalars": scalars})
    return tensors, meta


def unpack_optimizers(tensors: dict, meta: list[dict], names: list[list[str]]) -> list[dict]:
    """Inverse of pack_optimizers, checked against the current parameter names."""
    if len(meta) != len(names):
        raise CheckpointError(f"checkpoint has {len(meta)} optimizers, the run has {len(names)}")
    out = []
    for i, (m, pnames) in enumerate(zip(meta, names, strict=True)):
        if m["names"] != pnames:
            raise CheckpointError(f"optimizer {i} parameters differ from the checkpoint's")
        state = {}
        for idx, pname in enumerate(pnames):
            entries = dict(m["scalars"].get(pname, {}))
            prefix = f"optim/{i}/{pname}/"
            for key, value in tensors.items():
                if key.startswith(prefix):
                    entries[key[len(prefix):]] = value
            if entries:
                state[idx] = entries
        out.append({"state": state, "param_groups": m["param_groups"]})
    return out


def save_state(out_dir, step: int, tensors: dict[str, torch.Tensor], meta: dict,
               keep: int = 2) -> str:
    """Write a checkpoint atomically, then drop all but the newest `keep`."""
    from safetensors.torch import save_file

    from golfpack.fileio import atomic_path

    path = checkpoint_path(out_dir, step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    body = dict(meta, format=FORMAT, step=step)
    with atomic_path(path, force=True) as tmp:  # a resumed run rewrites its own step
        save_file(flat, tmp, metadata={META_KEY: json.dumps(body, allow_nan=True)})
    for _, old in list_checkpoints(out_dir)[:-keep]:
        os.unlink(old)
    return path


def load_state(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read one checkpoint -> (tensors, meta); CheckpointError when it is not ours or broken."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: unreadable training checkpoint ({exc})") from None
    if meta is None:
        raise CheckpointError(f"{path}: not a golftrain training checkpoint")
    try:
        body = json.loads(meta)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({exc})") from None
    if body.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {body.get('format')!r}")
    return tensors, body


def latest_state(out_dir):
    """The newest readable checkpoint -> (path, tensors, meta, skipped) or None; `skipped`
    lists newer files that could not be read (reported, never deleted)."""
    skipped = []
    for _, path in reversed(list_checkpoints(out_dir)):
        try:
            tensors, meta = load_state(path)
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        return path, tensors, meta, skipped
    if skipped:
        raise CheckpointError(f"no readable checkpoint: {skipped[0]}")
    return None


def sub_dict(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}
