"""Safe checkpoints: weights and model config together in one safetensors file.

Loading never unpickles arbitrary objects: safetensors files are parsed by the safetensors
library, and plain `torch.save` state dicts are read with `weights_only=True` inside a
guard that accepts plain data only (golfpack.foreign.safeload). A plain state dict carries
no config: pass one, or let the challenge baseline's architecture be inferred from the
shapes (golfpack.foreign.infer). Writes are atomic (temp file + rename).

A file never chooses code to run: the `arch` ("module:factory") a checkpoint or artifact
names is imported only when it is on the allow-list (golf's own models, and those a program
registers with `register_arch`); any other arch must be named by the user (the `arch`
argument of build_model) or explicitly trusted (`trust=True`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from golfpack.archs import (  # noqa: F401  (the allow-list's API, re-exported here)
    DEFAULT_ARCH,
    TRUSTED_ARCHS,
    UntrustedArchError,
    arch_trusted,
    check_file_arch,
    register_arch,
)
from golfpack.errors import CheckpointError

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


def load(path, config: dict | None = None, infer: bool = True
         ) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint -> (state_dict, config). See load_with_notes."""
    state, cfg, _ = load_with_notes(path, config, infer)
    return state, cfg


def load_with_notes(path, config: dict | None = None, infer: bool = True
                    ) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    """Read a checkpoint -> (state_dict, config, notes on what was inferred or ignored).

    safetensors files carry their config; for a plain torch.save state dict pass `config`
    (a dict, or a path to a JSON file: golf's config or a dump of a script's
    Hyperparameters), or let the baseline architecture be inferred from the shapes
    (`infer`). Pickles that would run code are refused.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) == 8 and _looks_like_safetensors(path, head):
        state, cfg = _load_safetensors(path, config)
        return state, cfg, []
    return _load_torch(path, config, infer)


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
            raise CheckpointError(f"{path}: no model config in the checkpoint; pass `config`",
                                  param="config")
        try:
            config = json.loads(meta[_META_KEY])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: config metadata is not valid JSON ({exc})") from None
    return state, _resolve_config(config)


def _load_torch(path, config, infer: bool):
    from golfpack.errors import read_file
    from golfpack.foreign.safeload import safe_torch_load, tensor_dict

    raw = read_file(path, "checkpoint", CheckpointError)
    if raw[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not a readable checkpoint: neither safetensors nor "
                              "a torch.save zip file (a .ptz is read as an artifact)")
    state = tensor_dict(safe_torch_load(raw, path), path)
    if config is not None:
        return state, _resolve_config(config), []
    if not infer:  # the caller names the model itself
        return state, {}, []
    from golfpack.foreign.infer import infer_baseline_config

    cfg, notes = infer_baseline_config(state, path)
    return state, cfg, notes


def _resolve_config(config) -> dict:
    if isinstance(config, (str, os.PathLike)):
        try:
            with open(config) as fh:
                config = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read config {config}: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError("model config must be a JSON object")
    # a dump of a script's Hyperparameters may use the environment variables' names
    config = {(k.lower() if isinstance(k, str) and k.isupper() else k): v
              for k, v in config.items()}
    config.setdefault("arch", DEFAULT_ARCH)
    return config


def build_model(config: dict, state_dict: dict[str, torch.Tensor] | None = None,
                arch: str | None = None, trust: bool = False, notes: list | None = None):
    """Rebuild a model, optionally loading (and checking) weights.

    `arch` is the model the caller (the user) names: "module:factory" or
    "PATH/script.py:Class" (golfpack.foreign.script). Without it the config's own `arch` is
    used, which must be on the allow-list unless `trust`. Config keys the factory does not
    take (training-only Hyperparameters) are dropped and listed in `notes`. Weights must fit
    exactly (names and shapes); the records' per-layer names are stacked into banks when
    the model has banks.
    """
    import importlib

    from golfpack.foreign.script import build_from_script, is_script_spec

    notes = [] if notes is None else notes
    spec = arch if arch is not None else config.get("arch", DEFAULT_ARCH)
    if arch is None and not trust:
        check_file_arch(spec)
    if not isinstance(spec, str) or ":" not in spec:
        raise CheckpointError(f"arch {spec!r} must look like 'module:factory'")
    model_cfg = {k: v for k, v in config.items() if k != "arch"}
    if is_script_spec(spec):
        model, _, ignored = build_from_script(spec, model_cfg)
    else:
        mod_name, attr = spec.split(":", 1)
        try:
            module = importlib.import_module(mod_name)
            factory = getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise CheckpointError(f"cannot import model factory {spec!r}: {exc}") from None
        model_cfg, ignored = _known_keys(module, model_cfg)
        try:
            model = factory(model_cfg)
        except Exception as exc:
            raise CheckpointError(f"{spec} cannot be built from this config: "
                                  f"{type(exc).__name__}: {str(exc)[:160]}") from None
    if ignored:
        notes.append(f"ignored config keys the model does not take: {', '.join(ignored[:12])}"
                     + (f" (+{len(ignored) - 12} more)" if len(ignored) > 12 else ""))
    if state_dict is not None:
        load_weights(model, state_dict, spec)
    return model


def _known_keys(module, cfg: dict) -> tuple[dict, list[str]]:
    """Split a config into the keys the module's GPTConfig dataclass has and the rest (a
    Hyperparameters dump holds many training-only keys). Modules without one get it all."""
    dc = getattr(module, "GPTConfig", None)
    if dc is None or not dataclasses.is_dataclass(dc):
        return cfg, []
    known = {f.name for f in dataclasses.fields(dc)}
    return ({k: v for k, v in cfg.items() if k in known},
            sorted(k for k in cfg if k not in known))


def load_weights(model, state: dict[str, torch.Tensor], spec: str = "the model") -> None:
    """load_state_dict(strict) with one-line errors naming the first misfit."""
    from golfpack.foreign.records import rebank_like

    own = model.state_dict()
    state = rebank_like(state, own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not fit {spec}: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise CheckpointError(f"weights do not fit {spec}: {k} is "
                                  f"{tuple(state[k].shape)} in the file, the model has "
                                  f"{tuple(t.shape)}")
    model.load_state_dict(state, strict=True)
