"""A competitor's training script as a model library: `PATH/train_gpt.py:GPT`.

The user names the script on the command line (a file never does). It is imported as a
module under a private name, so its `if __name__ == "__main__": main()` never runs. Before
importing, its top level is read with `ast` and refused when it would do work there: a bare
call, a loop, a `with`, or an assignment that calls one of the script's own functions.
(Imports, definitions and constant assignments such as `Hyperparameters` run as usual.)

CUDA-only imports get CPU stand-ins when the real package is absent: `flash_attn_interface`
(FlashAttention 3: dense causal SDPA, and the varlen form as a block-diagonal causal mask
built from cu_seqlens: the same math), and `triton` (kernels can be defined, not run: the
records use them only in training).

The model class is built from the script's own `Hyperparameters` (whose class attributes read
environment variables with defaults when the script is imported), with a config dict's
values set over them: `GPT(h)` when the constructor takes one argument, else keyword
arguments named like Hyperparameters attributes (the baseline's `GPT(vocab_size=...)`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import os
import sys
import types

from golfpack.errors import CheckpointError

SCRIPT_SUFFIX = ".py"


def is_script_spec(spec: str) -> bool:
    """True for 'some/path/file.py:Factory' (a script), False for 'module:factory'."""
    path = spec.rsplit(":", 1)[0]
    return path.endswith(SCRIPT_SUFFIX) or os.sep in path or "/" in path


def check_top_level(source: str, path: str) -> None:
    """Refuse a script whose top level runs work on import (see the module docstring)."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise CheckpointError(f"{path}: not valid Python (line {exc.lineno}: {exc.msg})") from None
    own = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if isinstance(node, ast.If) and _is_main_guard(node.test):
            continue
        if isinstance(node, ast.Try) and all(
                isinstance(n, (ast.Import, ast.ImportFrom, ast.Pass, ast.Assign))
                for part in (node.body, node.orelse, *[h.body for h in node.handlers])
                for n in part):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            value = node.value
            called = {c.func.id for c in ast.walk(value) if isinstance(c, ast.Call)
                      and isinstance(c.func, ast.Name)} if value is not None else set()
            if not called & own:
                continue
            raise CheckpointError(f"{path}: refused: line {node.lineno} calls "
                                  f"{sorted(called & own)[0]}() at import time; the "
                                  "script must only define things when imported")
        what = type(node).__name__.lower()
        raise CheckpointError(f"{path}: refused: line {node.lineno} runs a top-level {what} "
                              "at import time; keep work under `if __name__ == \"__main__\":`")


def _is_main_guard(test) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def import_script(path):
    """Import the script file as a module (never as __main__); cached per path+content."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such script")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 Python source") from None
    check_top_level(source, path)
    name = "golf_script_" + hashlib.sha256(path.encode() + raw).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    standins = cpu_standins()
    if standins:
        module.__dict__["__builtins__"] = _builtins_serving(standins)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit from a script is an input error too
        sys.modules.pop(name, None)
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: importing the script failed: "
                              f"{type(exc).__name__}: {msg}") from None
    return module


def build_from_script(spec: str, config: dict | None = None):
    """'PATH.py:Class' + config overrides -> (model, hyperparameter dict, ignored keys)."""
    path, attr = spec.rsplit(":", 1)
    module = import_script(path)
    cls = getattr(module, attr, None)
    if cls is None or not callable(cls):
        raise CheckpointError(f"{path} has no class or function {attr!r}")
    hp, ignored = hyperparameters(module, config or {})
    try:
        params = [p for p in inspect.signature(cls).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):
        params = []
    try:
        if len(params) == 1 and not hasattr(hp, params[0].name):
            model = cls(hp)
        else:
            kwargs, missing = {}, []
            for p in params:
                if hasattr(hp, p.name):
                    kwargs[p.name] = getattr(hp, p.name)
                elif p.default is p.empty:
                    missing.append(p.name)
            if missing:
                raise CheckpointError(f"{spec}: no value for {', '.join(missing)} (not in "
                                      "the script's Hyperparameters nor the config)")
            model = cls(**kwargs)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{spec}: building the model failed: {type(exc).__name__}: "
                              f"{str(exc)[:160]}") from None
    eval_switches(model, hp)
    values = {k: v for k, v in vars(hp).items() if _plain(v)}
    return model, values, ignored


def eval_switches(model, hp) -> None:
    """Set what the records' own evaluation sets after loading: a model with depth
    recurrence (`looping_active`, NUM_LOOPS > 0) is evaluated with the loops on."""
    if hasattr(model, "looping_active") and int(getattr(hp, "num_loops", 0) or 0) > 0:
        model.looping_active = True


def hyperparameters(module, config: dict):
    """The script's Hyperparameters instance with config values set over its defaults
    -> (instance, config keys it does not have)."""
    cls = getattr(module, "Hyperparameters", None)
    hp = cls() if isinstance(cls, type) else types.SimpleNamespace()
    # class attributes -> instance attributes, so vars(hp) lists them
    for k in dir(type(hp)):
        if not k.startswith("_") and _plain(getattr(type(hp), k)):
            setattr(hp, k, getattr(type(hp), k))
    ignored = []
    for key, value in config.items():
        if key == "arch":
            continue
        k = key.lower()
        if hasattr(hp, k) or not isinstance(cls, type):
            setattr(hp, k, value)
        else:
            ignored.append(key)
    return hp, ignored


def _plain(v) -> bool:
    return isinstance(v, (bool, int, float, str, type(None)))


# ----------------------------------------------------------------- CPU stand-ins
def _builtins_serving(standins: dict):
    """A builtins dict whose __import__ serves `standins` to the script's own imports only
    (sys.modules never sees them, so torch's probes for triton stay truthful)."""
    import builtins

    real = builtins.__import__

    def script_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name in standins or name.split(".")[0] in standins):
            if fromlist:
                return standins[name]
            return standins[name.split(".")[0]]
        return real(name, globals, locals, fromlist, level)

    table = dict(vars(builtins))
    table["__import__"] = script_import
    return table


def cpu_standins() -> dict[str, types.ModuleType]:
    """Stand-ins for flash_attn_interface and triton when they are not installed."""
    out = {}
    if importlib.util.find_spec("flash_attn_interface") is None:
        from golfpack.foreign import dense_attn

        mod = types.ModuleType("flash_attn_interface")
        mod.flash_attn_func = dense_attn.flash_attn_func
        mod.flash_attn_varlen_func = dense_attn.flash_attn_varlen_func
        mod.__golf_standin__ = True
        out["flash_attn_interface"] = mod
    if importlib.util.find_spec("triton") is None:
        out.update(_triton_standin())
    return out


def _triton_standin() -> dict[str, types.ModuleType]:
    def unavailable(*_a, **_k):
        raise RuntimeError("this path needs triton and CUDA (training kernels)")

    class Kernel:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, _grid):
            return unavailable

        __call__ = unavailable

    def lang_attr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return unavailable

    triton = types.ModuleType("triton")
    triton.jit = lambda fn=None, **_k: Kernel(fn) if fn is not None else Kernel
    triton.cdiv = lambda a, b: -(-a // b)
    triton.autotune = lambda *a, **k: (lambda fn: fn)
    triton.Config = lambda *a, **k: None
    triton.__golf_standin__ = True
    lang = types.ModuleType("triton.language")
    lang.constexpr = type("constexpr", (), {})
    lang.__getattr__ = lang_attr
    tools = types.ModuleType("triton.tools")
    desc = types.ModuleType("triton.tools.tensor_descriptor")
    desc.TensorDescriptor = type("TensorDescriptor", (), {"from_tensor": staticmethod(unavailable)})
    triton.language, triton.tools, tools.tensor_descriptor = lang, tools, desc
    return {"triton": triton, "triton.language": lang, "triton.tools": tools,
            "triton.tools.tensor_descriptor": desc}
