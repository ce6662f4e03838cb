"""Training configuration: one flat set of keys (the challenge baseline's names where one
exists), read from a shipped name or a TOML/JSON file, then `key=value` overrides typed by
each key's default. Unknown keys are refused, so a typo never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, fields

from golfpack.errors import GolfError

SHIPPED = ("baseline", "stack", "tiny", "frontier", "tiny_frontier")
# GPTConfig fields that live in the training config under the same names.
MODEL_KEYS = ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult",
              "logit_softcap", "rope_base", "qk_gain_init", "tied_embed_init_std",
              "mlp_negative_slope", "xsa_last_n", "rope_dims", "ln_scale", "num_loops",
              "loop_start", "loop_end", "parallel_start", "parallel_final", "smear_gate",
              "attn_gate_dims", "skip_gates")
# Model keys whose default is "off": a checkpoint stores them only when they are on, so the
# config a baseline run stores (and older checkpoints) keep their exact key set.
OPTIONAL_MODEL_KEYS = MODEL_KEYS[10:]
# Keys that may differ between a checkpoint and the run resuming it (they change what is
# logged, saved or reported, never the trained weights).
RESUMABLE_KEYS = frozenset({
    "val_loss_every", "train_log_every", "val_max_tokens", "val_batch_tokens",
    "checkpoint_every", "checkpoint_keep", "compile", "device", "grad_accum_steps",
    "export_scheme", "export_codec", "code_mode", "eval_seq_len", "eval_stride",
    "final_eval", "final_sliding", "iterations", "max_wallclock_seconds",
    "gptq_reserve_seconds", "gptq_calibration_batches", "gptq_batch_tokens",
})


MUON_NS = ("quintic", "polar_express")


class ConfigError(GolfError):
    """A configuration file or override is malformed, unknown or out of range."""


@dataclass
class TrainConfig:
    # -- model (GPTConfig); vocab_size 0 = take it from the tokenizer --
    vocab_size: int = 1024
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: float = 2.0
    logit_softcap: float = 30.0
    rope_base: float = 10000.0
    qk_gain_init: float = 1.5
    tied_embed_init_std: float = 0.005
    # -- the April model options (trainer/model.py); these defaults are all "off" --
    mlp_negative_slope: float = 0.0    # 0.5 = LeakyReLU(0.5)^2 MLP; 0 = relu^2
    xsa_last_n: int = 0                # exclusive self-attention on the last N layers
    rope_dims: int = 0                 # rotary on the first k dims of each head; 0 = all
    ln_scale: bool = False             # block norm outputs scaled 1/sqrt(layer + 1)
    num_loops: int = 0                 # depth recurrence: loop_start..loop_end run 1+N times
    loop_start: int = 0
    loop_end: int = 0
    loop_start_frac: float = 0.0       # looping switched on at this fraction of training
    parallel_start: int = 0            # parallel residual lanes from this layer; 0 = off
    parallel_final: str = "mean"       # the lane the head reads: mean | attn | mlp
    smear_gate: bool = False           # SmearGate (never mixes across a BOS)
    attn_gate_dims: int = 0            # sparse attention-output gate on the first k dims
    skip_gates: bool = False           # sigmoid gates on the U-Net skips
    # -- data: globs relative to --data (absolute paths allowed) --
    train_files: str = "fineweb_train_*.bin"
    val_files: str = "fineweb_val_*.bin"
    val_max_tokens: int = 0            # periodic validation on the first N val tokens; 0 = all
    # -- schedule --
    iterations: int = 20000
    max_wallclock_seconds: float = 600.0   # 0 = no cap
    warmdown_iters: int = 1200
    warmdown_frac: float = 0.0         # > 0: warmdown over this fraction of training (of the
    #                                    wall clock under a cap), instead of warmdown_iters
    min_lr: float = 0.0                # floor of the LR multiplier during the warmdown
    warmup_steps: int = 20             # compile warm-up steps, undone afterwards
    train_batch_tokens: int = 524288   # global tokens per optimizer step
    train_seq_len: int = 1024
    grad_accum_steps: int = 0          # 0 = 8 // world_size (at least 1)
    seed: int = 1337
    val_loss_every: int = 1000         # 0 = only at the end
    val_batch_tokens: int = 524288
    train_log_every: int = 200
    # -- optimisers --
    matrix_lr: float = 0.04
    embed_lr: float = 0.05
    scalar_lr: float = 0.04
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5
    muon_nesterov: bool = True
    muon_weight_decay: float = 0.0     # decoupled: p *= 1 - lr * wd
    muon_ns: str = "quintic"           # Newton-Schulz coefficients: quintic | polar_express
    muon_row_normalize: bool = False   # MuonEq-R: unit-norm rows before Newton-Schulz
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    adam_weight_decay: float = 0.0     # the scalar/control Adam group
    embed_weight_decay: float = -1.0   # the embedding's Adam; < 0 = adam_weight_decay
    wd_taper_start_frac: float = 1.0   # weight decays fall linearly from this fraction...
    wd_taper_final_mult: float = 1.0   # ...to this multiple at the end (1.0 = no taper)
    grad_clip_norm: float = 0.0        # 0 = off
    # -- EMA and QAT --
    ema_decay: float = 0.0             # 0 = off; the final checkpoint holds EMA weights if on
    ema_warmup: bool = True            # step t decays min(ema_decay, (1+t)/(10+t)) (trainer/ema.py)
    qat: str = "off"                   # "off", "on" (= export_scheme), or a golfpack spec
    qat_start_lr_mult: float = 1.0     # QAT on once the LR multiplier <= this (1.0 = always)
    # -- fault tolerance --
    checkpoint_every: int = 1000       # 0 = no periodic checkpoints
    checkpoint_keep: int = 2
    # -- end of run: export and scoring --
    export_scheme: str = ""            # "" = the QAT scheme when QAT is on, else golfpack's default
    export_codec: str = "auto"
    gptq: bool = False                 # Hessian GPTQ export, calibrated on training tokens
    gptq_reserve_seconds: float = 0.0  # wall clock kept from training for the GPTQ export
    gptq_calibration_batches: int = 16
    gptq_batch_tokens: int = 65536     # tokens per calibration batch (train_seq_len rows)
    code_mode: str = "raw"
    eval_seq_len: int = 0              # 0 = train_seq_len
    eval_stride: int = 64
    final_eval: bool = True            # compress + round-trip flat score at the end
    final_sliding: bool = True         # also the sliding-window score
    # -- runtime --
    compile: bool = True
    device: str = "auto"               # auto | cpu | cuda

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_config(self) -> dict:
        """The GPTConfig part (what golfpack.checkpoint stores beside the weights); the
        April options only when on, so a baseline model's stored config is unchanged."""
        return {k: getattr(self, k) for k in MODEL_KEYS
                if k not in OPTIONAL_MODEL_KEYS or getattr(self, k) != getattr(_DEFAULTS, k)}

    @property
    def embed_wd(self) -> float:
        return self.adam_weight_decay if self.embed_weight_decay < 0 else \
            self.embed_weight_decay

    @property
    def effective_eval_seq_len(self) -> int:
        return self.eval_seq_len or self.train_seq_len

    @property
    def qat_enabled(self) -> bool:
        return self.qat.strip().lower() not in ("", "off", "none", "false", "0")

    @property
    def qat_spec(self) -> str:
        """The scheme spec QAT trains for ("on" = the export's scheme)."""
        if self.qat.strip().lower() in ("on", "true", "1"):
            return self.export_scheme.strip()
        return self.qat.strip()

    def validate(self) -> TrainConfig:
        """Range checks that need no world size; raises ConfigError (one line)."""
        positive = ("num_layers", "model_dim", "num_heads", "num_kv_heads", "train_seq_len",
                    "train_batch_tokens", "muon_backend_steps", "val_batch_tokens",
                    "checkpoint_keep", "eval_stride", "gptq_calibration_batches",
                    "gptq_batch_tokens")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive (got {getattr(self, key)})")
        non_negative = ("vocab_size", "iterations", "max_wallclock_seconds", "warmdown_iters",
                        "warmup_steps", "grad_accum_steps", "val_loss_every", "train_log_every",
                        "val_max_tokens", "matrix_lr", "embed_lr", "scalar_lr",
                        "muon_momentum_warmup_steps", "muon_weight_decay", "adam_weight_decay",
                        "grad_clip_norm", "checkpoint_every", "eval_seq_len", "adam_eps",
                        "qat_start_lr_mult", "gptq_reserve_seconds", "wd_taper_final_mult",
                        "num_loops", "loop_start", "loop_end", "parallel_start", "rope_dims",
                        "xsa_last_n", "attn_gate_dims", "mlp_negative_slope")
        for key in non_negative:
            v = getattr(self, key)
            if not (v >= 0) or (isinstance(v, float) and math.isnan(v)):
                raise ConfigError(f"{key} must be >= 0 (got {v})")
        for key in ("muon_momentum", "muon_momentum_warmup_start", "beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"{key} must lie in [0, 1) (got {getattr(self, key)})")
        for key in ("loop_start_frac", "warmdown_frac", "min_lr", "wd_taper_start_frac"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{key} must lie in [0, 1] (got {getattr(self, key)})")
        if self.muon_ns not in MUON_NS:
            raise ConfigError(f"muon_ns must be one of {', '.join(MUON_NS)} "
                              f"(got {self.muon_ns!r})")
        if self.max_wallclock_seconds > 0 and \
                self.gptq_reserve_seconds >= self.max_wallclock_seconds:
            raise ConfigError(f"gptq_reserve_seconds {self.gptq_reserve_seconds} leaves no "
                              f"training time of max_wallclock_seconds "
                              f"{self.max_wallclock_seconds}")
        if self.gptq and self.gptq_batch_tokens < self.train_seq_len:
            raise ConfigError(f"gptq_batch_tokens {self.gptq_batch_tokens} holds no "
                              f"{self.train_seq_len}-token sequence")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must lie in [0, 1) (got {self.ema_decay})")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda (got {self.device!r})")
        if self.eval_stride > self.effective_eval_seq_len:
            raise ConfigError(f"eval_stride {self.eval_stride} exceeds the eval sequence "
                              f"length {self.effective_eval_seq_len}")
        self._check_schemes()
        try:
            from trainer.model import GPTConfig

            GPTConfig(**{**self.model_config(), "vocab_size": self.vocab_size or 1})
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        return self

    def _check_schemes(self) -> None:
        """Both specs must parse, and QAT must train for the grid the export stores."""
        from golfpack.quant.scheme import parse_rules
        from trainer.qat import expand_spec

        if self.qat_enabled and not self.qat_spec:
            raise ConfigError("qat=on needs an export_scheme (or give qat a scheme spec)")
        for key, text in (("qat", self.qat_spec if self.qat_enabled else ""),
                          ("export_scheme", self.export_scheme)):
            if not text.strip():
                continue
            try:
                parse_rules(expand_spec(text))
            except GolfError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        if self.qat_enabled and self.export_scheme.strip() and \
                expand_spec(self.export_scheme) != expand_spec(self.qat_spec):
            raise ConfigError(f"qat {self.qat!r} and export_scheme {self.export_scheme!r} "
                              "differ: QAT would train for a grid the export does not use "
                              "(leave export_scheme empty to export with the QAT scheme)")

    def micro_layout(self, world_size: int) -> tuple[int, int]:
        """(grad_accum_steps, sequences per micro-batch) for a world size; the global batch
        is the same for every world size, so runs on 1 and 8 GPUs see the same tokens."""
        accum = self.grad_accum_steps or max(1, 8 // world_size)
        parts = world_size * accum
        micro_tokens, rem = divmod(self.train_batch_tokens, parts)
        if rem or micro_tokens % self.train_seq_len or micro_tokens == 0:
            raise ConfigError(
                f"train_batch_tokens {self.train_batch_tokens} must split into {parts} "
                f"(world {world_size} x accum {accum}) micro-batches of whole "
                f"{self.train_seq_len}-token sequences")
        return accum, micro_tokens // self.train_seq_len


_FIELDS = {f.name: f for f in fields(TrainConfig)}
_DEFAULTS = TrainConfig()


def _unknown_key(key: str, where: str, param: str | None = None) -> ConfigError:
    close = difflib.get_close_matches(key, _FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r} in {where}{hint}", param=param)


def _coerce(key: str, value, where: str, param: str | None = None):
    """Type a value by the key's default type (str values come from `overrides`, named by
    `param` in the error)."""
    default = getattr(_DEFAULTS, key)
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            f = float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{key} in {where} expects {kind.__name__}, got {value!r}",
                          param=param) from None


def shipped_path(name: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", f"{name}.toml")


def _read_file(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    if path.endswith(".json"):
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ConfigError("TOML configs need Python 3.11+ or the tomli package; "
                                  "use a JSON config instead") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a table/object of keys")
    return data


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def load_config(source: str | os.PathLike = "baseline", overrides=(),
                extra: dict | None = None) -> TrainConfig:
    """Build a TrainConfig: defaults (= baseline) <- file or shipped name <- `extra` dict
    <- `key=value` overrides. Everything is typed, checked and validated."""
    source = os.fspath(source)
    if source in SHIPPED:
        path, where = shipped_path(source), f"shipped config {source!r}"
    elif os.path.exists(source):
        path, where = source, source
    else:
        raise ConfigError(f"config {source!r} is neither a shipped name "
                          f"({', '.join(SHIPPED)}) nor an existing file")
    values = {}
    for layer, label in ((_read_file(path), where), (extra or {}, "settings")):
        for key, value in layer.items():
            if key not in _FIELDS:
                raise _unknown_key(key, label)
            values[key] = _coerce(key, value, label)
    for item in overrides:
        key, value = parse_override(item)
        if key not in _FIELDS:
            raise _unknown_key(key, "`overrides`", param="overrides")
        values[key] = _coerce(key, value, "`overrides`", param="overrides")
    return TrainConfig(**values).validate()


def from_dict(data: dict) -> TrainConfig:
    """Rebuild a config saved in a checkpoint (strict: every key must be known)."""
    for key in data:
        if key not in _FIELDS:
            raise _unknown_key(key, "checkpoint")
    return TrainConfig(**{k: _coerce(k, v, "checkpoint") for k, v in data.items()})


def resume_conflicts(saved: dict, current: TrainConfig) -> list[str]:
    """Keys whose change would make a resumed run train differently."""
    now = current.to_dict()
    # a key newer than the checkpoint had its default then
    return sorted(k for k in now if k not in RESUMABLE_KEYS
                  and saved.get(k, getattr(_DEFAULTS, k)) != now[k])
