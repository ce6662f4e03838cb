"""Read a torch.save blob without running anything it names.

torch.load(weights_only=True) already refuses pickles that reference code outside torch's
small allow-list; on top of that the loaded object is walked and accepted only when it is
made of tensors, dicts with string keys, lists/tuples, strings, numbers, booleans, None and
dtypes. Anything else (a torch.Size, a module, an object torch's list let through) is
refused with one line naming where it sits.
"""

from __future__ import annotations

import io
import pickle

import torch

from golfpack.errors import CheckpointError

_SCALARS = (str, int, float, bool, type(None), torch.dtype)
MAX_DEPTH = 8


def safe_torch_load(raw: bytes, what: str, error: type = CheckpointError):
    """torch.load(raw) restricted to plain data (see the module docstring)."""
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or ["unsafe pickle"])[0]
        raise error(f"{what}: refused to load: the pickle names code, not only tensors "
                    f"({first[:160]})") from None
    except Exception as exc:  # zip/pickle corruption surfaces as many types
        raise error(f"{what}: not a readable torch.save file ({str(exc)[:160]})") from None
    check_plain(obj, what, error)
    return obj


def check_plain(obj, what: str, error: type = CheckpointError, where: str = "",
                depth: int = 0) -> None:
    """Raise `error` unless obj is plain data (tensors, dicts, lists, strings, numbers)."""
    if depth > MAX_DEPTH:
        raise error(f"{what}: nested deeper than {MAX_DEPTH} levels at {where or 'top'}")
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise error(f"{what}: {where or 'top'} is a {type(obj).__name__}, not a tensor")
        return
    if isinstance(obj, _SCALARS):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise error(f"{what}: a key under {where or 'top'} is a "
                            f"{type(k).__name__}, not a string")
            check_plain(v, what, error, f"{where}.{k}" if where else k, depth + 1)
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, what, error, f"{where}[{i}]", depth + 1)
        return
    raise error(f"{what}: {where or 'top'} holds a {type(obj).__name__}; only tensors, "
                "dicts, lists, strings and numbers are accepted")


def tensor_dict(obj, what: str, error: type = CheckpointError) -> dict[str, torch.Tensor]:
    """obj as {name: tensor} (a bare state dict, or one under a 'state_dict' key)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        raise error(f"{what}: expected a state dict of tensors")
    return {k: v.detach() for k, v in obj.items()}
