"""Safe checkpoints: weights and model config together in one safetensors file.

Loading never unpickles arbitrary objects: safetensors files are parsed by the safetensors
library, and plain `torch.save` state dicts are read with `weights_only=True` (the user must
then supply the config). Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os

import torch

from golfpack.errors import CheckpointError

DEFAULT_ARCH = "trainer.model:GPT"
_META_KEY = "golf_config"


def save(path, state_dict: dict[str, torch.Tensor], config: dict, force: bool = True) -> None:
    """Write `state_dict` + `config` to `path` (safetensors; config JSON in the metadata)."""
    from safetensors.torch import save as st_save

    from golfpack.fileio import atomic_write_bytes

    config = dict(config)
    config.setdefault("arch", DEFAULT_ARCH)
    tensors = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"state_dict entry {name!r} is not a tensor")
        tensors[name] = t.detach().to("cpu").contiguous().clone()
    try:
        meta = json.dumps(config, sort_keys=True)
    except TypeError as exc:
        raise CheckpointError(f"config is not JSON-serialisable: {exc}") from None
    atomic_write_bytes(path, st_save(tensors, metadata={_META_KEY: meta}), force=force)


def load(path, config: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint -> (state_dict, config).

    safetensors files carry their config; for a plain torch.save state dict pass `config`
    (a dict, or a path to a JSON file). Pickles that would run code are refused.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) == 8 and _looks_like_safetensors(path, head):
        return _load_safetensors(path, config)
    return _load_torch(path, config)


def _looks_like_safetensors(path: str, head: bytes) -> bool:
    n = int.from_bytes(head, "little")
    size = os.path.getsize(path)
    if not (2 <= n <= size - 8):
        return False
    with open(path, "rb") as fh:
        fh.seek(8)
        return fh.read(1) == b"{"


def _load_safetensors(path, config):
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if config is None:
        if _META_KEY not in meta:
            raise CheckpointError(f"{path}: no model config in the checkpoint; pass --config")
        try:
            config = json.loads(meta[_META_KEY])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: config metadata is not valid JSON ({exc})") from None
    return state, _resolve_config(config)


def _load_torch(path, config):
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe pickle"
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds more than tensors ({first[:160]})"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    if config is None:
        raise CheckpointError(f"{path}: a torch.save state dict carries no config; pass --config")
    return dict(obj), _resolve_config(config)


def _resolve_config(config) -> dict:
    if isinstance(config, (str, os.PathLike)):
        try:
            with open(config) as fh:
                config = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read config {config}: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError("model config must be a JSON object")
    config = dict(config)
    config.setdefault("arch", DEFAULT_ARCH)
    return config


def build_model(config: dict, state_dict: dict[str, torch.Tensor] | None = None,
                arch: str | None = None):
    """Rebuild the model a config names ("module:factory"), optionally loading weights.

    The import is dynamic so golfpack never depends on the trainer at import time.
    """
    import importlib

    spec = arch or config.get("arch", DEFAULT_ARCH)
    if ":" not in spec:
        raise CheckpointError(f"arch {spec!r} must look like 'module:factory'")
    mod_name, attr = spec.split(":", 1)
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"cannot import model factory {spec!r}: {exc}") from None
    model_cfg = {k: v for k, v in config.items() if k != "arch"}
    model = factory(model_cfg)
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"weights do not fit {spec}: missing {list(missing)[:5]}, "
                f"unexpected {list(unexpected)[:5]}")
    return model
