"""The challenge baseline GPT, whole and readable in one file.

token embedding -> RMSNorm -> blocks (pre-norm GQA attention with q/k RMSNorm, rotary
embeddings and a learned per-head q gain; relu^2 MLP; learned output scales; a learned mix of
the block input with the initial embedding) with U-Net skips between the first and second
half -> final RMSNorm -> tied output head -> logit soft-cap.

The model never sees a quantizer directly: QAT installs a `weight_transform` on each
`CastedLinear` (and on the tied embedding's head use), so the same forward serves plain
training, fake-quantized training and evaluation of dequantized weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from golfpack.errors import ModelConfigError

# Names of the small "control" parameters that quantizers keep in fp32.
CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")


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

    def __post_init__(self):
        if self.model_dim % self.num_heads:
            raise ModelConfigError("model_dim must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ModelConfigError("num_heads must be divisible by num_kv_heads")
        if (self.model_dim // self.num_heads) % 2:
            raise ModelConfigError("head dim must be even for rotary embeddings")

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
    """Rotary position embeddings (half-split layout), cos/sin cached per length."""

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
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.c_q = CastedLinear(cfg.model_dim, cfg.model_dim)
        self.c_k = CastedLinear(cfg.model_dim, kv_dim)
        self.c_v = CastedLinear(cfg.model_dim, kv_dim)
        self.proj = CastedLinear(cfg.model_dim, cfg.model_dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        self.rotary = Rotary(cfg.head_dim, cfg.rope_base)

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
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = CastedLinear(cfg.model_dim, cfg.mlp_hidden)
        self.proj = CastedLinear(cfg.mlp_hidden, cfg.model_dim, zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        # resid_mix[0] weighs the running residual, resid_mix[1] the initial embedding x0.
        self.resid_mix = nn.Parameter(torch.stack(
            (torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))

    def forward(self, x, x0, attn_mask=None):
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x), attn_mask)
        x = x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = GPTConfig()
        elif isinstance(config, dict):
            config = GPTConfig.from_dict(config)
        if not config.tie_embeddings:
            raise ModelConfigError("only tied embeddings are implemented (tie_embeddings=True)")
        self.config = cfg = config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        # The tied head may be fake-quantized too; None means "use the embedding as is".
        self.head_weight_transform = None
        self.num_encoder = cfg.num_layers // 2
        self.num_decoder = cfg.num_layers - self.num_encoder
        self.num_skips = min(self.num_encoder, self.num_decoder)
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, cfg.model_dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))

    # -- forward pieces, exposed so scorers can compute logits only where they score --
    def hidden(self, idx: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states [B, T, dim] (the tied head's input)."""
        x = rms_norm(self.tok_emb(idx))
        x0 = x
        skips = []
        for i in range(self.num_encoder):
            x = self.blocks[i](x, x0, attn_mask)
            skips.append(x)
        for i in range(self.num_decoder):
            if i < self.num_skips:
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()
            x = self.blocks[self.num_encoder + i](x, x0, attn_mask)
        return rms_norm(x)

    def head_weight(self) -> torch.Tensor:
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
