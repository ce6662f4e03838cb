"""The reference GPT, whole and readable in one file: the challenge baseline, plus the
options the April records share, each off by default (so the defaults are the baseline).

token embedding -> RMSNorm -> [SmearGate] -> blocks (pre-norm GQA attention with q/k RMSNorm,
[partial] rotary embeddings and a learned per-head q gain, [XSA], [output gate]; relu^2 or
LeakyReLU(0.5)^2 MLP; learned output scales; a learned mix of the block input with the
initial embedding; [norm inputs scaled 1/sqrt(layer+1)]) with U-Net skips [gated] between the
first and second half, [a range of layers looped], [two parallel residual lanes in the last
layers] -> final RMSNorm -> tied output head -> logit soft-cap.

The model never sees a quantizer directly: QAT installs a `weight_transform` on each
`CastedLinear` (and on the tied embedding's head use), so the same forward serves plain
training, fake-quantized training and evaluation of dequantized weights.

Depth recurrence is switched by `GPT.looping`, a plain attribute read by the forward's
Python control flow: torch.compile guards on it, so flipping it makes the compiled model
recompile (once) into the looped graph instead of silently keeping the old one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from golfpack.errors import ModelConfigError

# Names of the small "control" parameters that quantizers keep in fp32 and Adam trains.
CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight",
                    "skip_gate", "attn_gate", "smear_gate", "parallel_")
PARALLEL_FINALS = ("mean", "attn", "mlp")


@dataclass
class GPTConfig:
    vocab_size: int = 1024
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: float = 2
    tie_embeddings: bool = True
    logit_softcap: float = 30.0
    rope_base: float = 10000.0
    qk_gain_init: float = 1.5
    tied_embed_init_std: float = 0.005
    # -- the April options; every default below is "off" (= the baseline) --
    mlp_negative_slope: float = 0.0   # MLP act = leaky_relu(x, slope)^2; 0 = relu^2
    xsa_last_n: int = 0               # exclusive self-attention on the last N layers
    rope_dims: int = 0                # rotary on the first k dims of each head; 0 = all
    ln_scale: bool = False            # block norm outputs scaled by 1/sqrt(layer + 1)
    num_loops: int = 0                # layers loop_start..loop_end run 1 + num_loops times
    loop_start: int = 0
    loop_end: int = 0
    parallel_start: int = 0           # two residual lanes (attn, mlp) from this layer; 0 = off
    parallel_final: str = "mean"      # which lane the head reads: mean | attn | mlp
    smear_gate: bool = False          # mix each token's embedding with the previous one's
    attn_gate_dims: int = 0           # per-head sigmoid gate on attention output, read
    #                                   from the first k input dims; 0 = off
    skip_gates: bool = False          # sigmoid gates on the U-Net skips
    bos_id: int = 1                   # document start (SmearGate never mixes across it)

    def __post_init__(self):
        if self.model_dim % self.num_heads:
            raise ModelConfigError("model_dim must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError("num_heads must be divisible by num_kv_heads")
        if (self.model_dim // self.num_heads) % 2:
            raise ModelConfigError("head dim must be even for rotary embeddings")
        if self.rope_dims < 0 or self.rope_dims % 2 or self.rope_dims > self.head_dim:
            raise ModelConfigError(f"rope_dims must be even and in [0, head dim {self.head_dim}]")
        if not 0 <= self.xsa_last_n <= self.num_layers:
            raise ModelConfigError(f"xsa_last_n must lie in [0, num_layers {self.num_layers}]")
        if self.num_loops < 0:
            raise ModelConfigError("num_loops must be >= 0")
        if self.num_loops and not 0 <= self.loop_start <= self.loop_end < self.num_layers:
            raise ModelConfigError("looped layers need 0 <= loop_start <= loop_end < num_layers")
        if not 0 <= self.parallel_start < max(self.num_layers, 1):
            raise ModelConfigError("parallel_start must lie in [0, num_layers)")
        if self.parallel_final not in PARALLEL_FINALS:
            raise ModelConfigError(f"parallel_final must be one of {', '.join(PARALLEL_FINALS)}")
        if not 0 <= self.attn_gate_dims <= self.model_dim:
            raise ModelConfigError("attn_gate_dims must lie in [0, model_dim]")
        if self.mlp_negative_slope < 0:
            raise ModelConfigError("mlp_negative_slope must be >= 0")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"arch"}
        if unknown:
            raise ModelConfigError(f"unknown GPTConfig keys: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in known})


def layer_order(cfg: GPTConfig, looping: bool) -> tuple[list[int], list[int]]:
    """(encoder, decoder) block indices in running order. Looping repeats the range
    loop_start..loop_end 1 + num_loops times; the sequence is then halved as usual."""
    n = cfg.num_layers
    if not (looping and cfg.num_loops):
        return list(range(n // 2)), list(range(n // 2, n))
    seg = list(range(cfg.loop_start, cfg.loop_end + 1))
    seq = list(range(cfg.loop_start)) + seg * (1 + cfg.num_loops) + \
        list(range(cfg.loop_end + 1, n))
    half = len(seq) // 2
    return seq[:half], seq[half:]


def rms_norm(x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),), eps=eps)


class CastedLinear(nn.Linear):
    """A bias-free linear layer whose fp32 weight is cast to the input dtype (bf16 under
    autocast) at use. `weight_transform` (e.g. QAT fake quantization) is applied first."""

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False):
        super().__init__(in_features, out_features, bias=False)
        self.weight_transform = None
        if zero_init:
            nn.init.zeros_(self.weight)

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        if self.weight_transform is not None:
            w = self.weight_transform(w)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight().to(x.dtype))


class Rotary(nn.Module):
    """Rotary position embeddings (half-split layout) over `dim` dims, cos/sin cached."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cache: tuple[int, torch.device, torch.Tensor, torch.Tensor] | None = None

    def forward(self, T: int, device: torch.device, dtype: torch.dtype):
        c = self._cache
        if c is None or c[0] < T or c[1] != device:
            t = torch.arange(T, device=device, dtype=torch.float32)
            freqs = torch.outer(t, self.inv_freq.to(device))
            c = (T, device, freqs.cos()[None, None], freqs.sin()[None, None])
            self._cache = c
        return c[2][:, :, :T].to(dtype), c[3][:, :, :T].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2 * cos.size(-1) dims of x; the rest pass through (partial RoPE)."""
    d = 2 * cos.size(-1)
    if d < x.size(-1):
        return torch.cat((apply_rotary(x[..., :d], cos, sin), x[..., d:]), dim=-1)
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, xsa: bool = False):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.c_q = CastedLinear(cfg.model_dim, cfg.model_dim)
        self.c_k = CastedLinear(cfg.model_dim, kv_dim)
        self.c_v = CastedLinear(cfg.model_dim, kv_dim)
        self.proj = CastedLinear(cfg.model_dim, cfg.model_dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        self.rotary = Rotary(cfg.rope_dims or cfg.head_dim, cfg.rope_base)
        self.xsa = xsa
        self.gate_dims = cfg.attn_gate_dims
        if self.gate_dims:  # zero init: every head starts at gate 0.5
            self.attn_gate = nn.Parameter(torch.zeros(cfg.num_heads, self.gate_dims))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = self.rotary(T, x.device, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        if self.xsa:  # exclusive self-attention: drop the component along the own value
            vn = F.normalize(v, dim=-1)
            y = y - (y * vn).sum(-1, keepdim=True) * vn
        if self.gate_dims:  # [B, T, H] -> one gate per head and position
            g = torch.sigmoid(F.linear(x[..., :self.gate_dims], self.attn_gate.to(x.dtype)))
            y = y * g.transpose(1, 2)[..., None]
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = CastedLinear(cfg.model_dim, cfg.mlp_hidden)
        self.proj = CastedLinear(cfg.mlp_hidden, cfg.model_dim, zero_init=True)
        self.slope = cfg.mlp_negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = F.leaky_relu(h, self.slope) if self.slope else torch.relu(h)
        return self.proj(h.square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int = 0):
        super().__init__()
        self.attn = CausalSelfAttention(cfg, xsa=layer >= cfg.num_layers - cfg.xsa_last_n)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        # resid_mix[0] weighs the running residual, resid_mix[1] the initial embedding x0.
        self.resid_mix = nn.Parameter(torch.stack(
            (torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))
        self.norm_scale = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else None

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        y = rms_norm(x)
        return y * self.norm_scale if self.norm_scale is not None else y

    def forward(self, x, x0, attn_mask=None):
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(self.norm(x), attn_mask)
        x = x + self.mlp_scale.to(x.dtype) * self.mlp(self.norm(x))
        return x

    def forward_parallel(self, lanes, x0, resid, post, attn_mask=None):
        """Two residual lanes: attention reads lane 0 (mixed with x0), the MLP reads lane
        1, both in parallel; lane j <- resid[j] * lane j + sum_i post[i, j] * out_i."""
        a, m = lanes
        mix = self.resid_mix.to(a.dtype)
        attn = self.attn_scale.to(a.dtype) * self.attn(self.norm(mix[0] * a + mix[1] * x0),
                                                       attn_mask)
        mlp = self.mlp_scale.to(a.dtype) * self.mlp(self.norm(m))
        resid, post = resid.to(a.dtype), post.to(a.dtype)
        return (resid[0] * a + post[0, 0] * attn + post[1, 0] * mlp,
                resid[1] * m + post[0, 1] * attn + post[1, 1] * mlp)


def smear(x: torch.Tensor, idx: torch.Tensor, gate: torch.Tensor, bos_id: int) -> torch.Tensor:
    """x_t <- x_t + sigmoid(gate) * (x_{t-1} - x_t), except where token t is a document
    start (BOS): it never mixes in the previous document. Position 0 mixes in zeros."""
    prev = F.pad(x[:, :-1], (0, 0, 1, 0))
    g = torch.sigmoid(gate.to(x.dtype)) * (idx != bos_id).to(x.dtype)[..., None]
    return x + g * (prev - x)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = GPTConfig()
        elif isinstance(config, dict):
            config = GPTConfig.from_dict(config)
        self.config = cfg = config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        # The tied head may be fake-quantized too; None means "use the embedding as is".
        self.head_weight_transform = None
        # A model built from a config runs the depth it was trained for; the trainer turns
        # looping off for the first part of training.
        self.looping = cfg.num_loops > 0
        enc, dec = layer_order(cfg, looping=True)
        self.num_skips = min(len(enc), len(dec))
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, cfg.model_dim))
        if cfg.skip_gates:  # zero init: sigmoid 0.5, an even blend of skip and stream
            self.skip_gates = nn.Parameter(torch.zeros(self.num_skips, cfg.model_dim))
        if cfg.smear_gate:
            self.smear_gate = nn.Parameter(torch.zeros(cfg.model_dim))
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        if cfg.parallel_start:
            self.parallel_post_lambdas = nn.Parameter(torch.ones(cfg.num_layers, 2, 2))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((cfg.num_layers, 2), 1.1))
        # untied head (the baseline's TIE_EMBEDDINGS=0): its own zero-initialised matrix
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(
            cfg.model_dim, cfg.vocab_size, zero_init=True)

    def set_looping(self, on: bool) -> None:
        """Switch depth recurrence (a no-op for a model without looped layers)."""
        self.looping = bool(on) and self.config.num_loops > 0

    def add_skip(self, x: torch.Tensor, skip: torch.Tensor, i: int) -> torch.Tensor:
        s = self.skip_weights[i].to(x.dtype) * skip
        if self.config.skip_gates:
            return torch.lerp(s, x, torch.sigmoid(self.skip_gates[i].to(x.dtype)))
        return x + s

    # -- forward pieces, exposed so scorers can compute logits only where they score --
    def hidden(self, idx: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states [B, T, dim] (the tied head's input)."""
        cfg = self.config
        x = rms_norm(self.tok_emb(idx))
        if cfg.smear_gate:
            x = smear(x, idx, self.smear_gate, cfg.bos_id)
        x0 = x
        enc, dec = layer_order(cfg, self.looping)
        skips = []
        for i in enc:
            x = self.blocks[i](x, x0, attn_mask)
            skips.append(x)
        lanes = None
        for j, i in enumerate(dec):
            if cfg.parallel_start and i >= cfg.parallel_start:
                lanes = lanes or (x, x)
                a = self.add_skip(lanes[0], skips.pop(), j) if j < self.num_skips and skips \
                    else lanes[0]
                lanes = self.blocks[i].forward_parallel(
                    (a, lanes[1]), x0, self.parallel_resid_lambdas[i],
                    self.parallel_post_lambdas[i], attn_mask)
                continue
            if j < self.num_skips and skips:
                x = self.add_skip(x, skips.pop(), j)
            x = self.blocks[i](x, x0, attn_mask)
        if lanes is not None:
            final = cfg.parallel_final
            x = lanes[0] if final == "attn" else lanes[1] if final == "mlp" else \
                0.5 * (lanes[0] + lanes[1])
        return rms_norm(x)

    def head_weight(self) -> torch.Tensor:
        if self.lm_head is not None:
            return self.lm_head.effective_weight()
        w = self.tok_emb.weight
        if self.head_weight_transform is not None:
            w = self.head_weight_transform(w)
        return w

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Soft-capped float32 logits from hidden states."""
        logits = F.linear(h, self.head_weight().to(h.dtype)).float()
        c = self.config.logit_softcap
        return c * torch.tanh(logits / c) if c else logits

    def forward(self, idx: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """idx [B, T] -> float32 logits [B, T, vocab]."""
        return self.logits(self.hidden(idx, attn_mask))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats (the training objective)."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def token_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in nats (reduction='none'), same shape as targets."""
    flat = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           reduction="none")
    return flat.view(targets.shape)


def document_mask(idx: torch.Tensor, bos_id: int = 1) -> torch.Tensor:
    """Boolean attention mask [B, 1, T, T]: causal and never across a BOS (document
    isolation). Position j is visible from i when j <= i and both lie in the same document."""
    doc = torch.cumsum((idx == bos_id).to(torch.int32), dim=1)  # [B, T]
    T = idx.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    same = doc[:, :, None] == doc[:, None, :]
    return (same & causal)[:, None]
