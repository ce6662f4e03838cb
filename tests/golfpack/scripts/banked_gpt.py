"""A small banked GPT written for golf's tests (the records' layout, not their code): one
3-D parameter per weight family, sliced inside forward.

  qo_bank        [2L, d, d]     slot i: layer i's query, slot L+i: its output projection
  kv_bank        [2L, kv, d]    slot i: key, slot L+i: value
  mlp_up_bank    [L, h, d]
  mlp_down_bank  [L, d, h]
The head is tied (F.linear with tok_emb.weight). forward(x, y) -> loss, forward_logits(x).
"""

import os

import torch
import torch.nn.functional as F
from torch import nn


class Hyperparameters:
    vocab_size = int(os.environ.get("VOCAB_SIZE", 64))
    num_layers = int(os.environ.get("NUM_LAYERS", 2))
    model_dim = int(os.environ.get("MODEL_DIM", 32))
    num_heads = int(os.environ.get("NUM_HEADS", 4))
    num_kv_heads = int(os.environ.get("NUM_KV_HEADS", 2))
    mlp_mult = int(os.environ.get("MLP_MULT", 2))
    iterations = int(os.environ.get("ITERATIONS", 100))  # training-only


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attn_scale = nn.Parameter(torch.ones(dim))
        self.mlp_scale = nn.Parameter(torch.ones(dim))

    def forward(self, x, q_w, k_w, v_w, o_w, up_w, down_w, heads, kv_heads):
        b, t, d = x.shape
        hd = d // heads
        h = F.rms_norm(x, (d,))
        q = F.linear(h, q_w.to(h.dtype)).view(b, t, heads, hd).transpose(1, 2)
        k = F.linear(h, k_w.to(h.dtype)).view(b, t, kv_heads, hd).transpose(1, 2)
        v = F.linear(h, v_w.to(h.dtype)).view(b, t, kv_heads, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        y = y.transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_scale * F.linear(y, o_w.to(y.dtype))
        h = F.rms_norm(x, (d,))
        u = F.relu(F.linear(h, up_w.to(h.dtype))).square()
        return x + self.mlp_scale * F.linear(u, down_w.to(u.dtype))


class GPT(nn.Module):
    def __init__(self, h):
        super().__init__()
        L, d = h.num_layers, h.model_dim
        kv = d // h.num_heads * h.num_kv_heads
        hid = h.mlp_mult * d
        self.num_layers, self.heads, self.kv_heads = L, h.num_heads, h.num_kv_heads
        self.tok_emb = nn.Embedding(h.vocab_size, d)
        self.qo_bank = nn.Parameter(torch.randn(2 * L, d, d) / d ** 0.5)
        self.kv_bank = nn.Parameter(torch.randn(2 * L, kv, d) / d ** 0.5)
        self.mlp_up_bank = nn.Parameter(torch.randn(L, hid, d) / d ** 0.5)
        self.mlp_down_bank = nn.Parameter(torch.randn(L, d, hid) / hid ** 0.5)
        self.blocks = nn.ModuleList([Block(d) for _ in range(L)])

    def forward_logits(self, idx):
        x = self.tok_emb(idx)
        n = self.num_layers
        for i, blk in enumerate(self.blocks):
            x = blk(x, self.qo_bank[i], self.kv_bank[i], self.kv_bank[n + i],
                    self.qo_bank[n + i], self.mlp_up_bank[i], self.mlp_down_bank[i],
                    self.heads, self.kv_heads)
        x = F.rms_norm(x, (x.size(-1),))
        return F.linear(x, self.tok_emb.weight)

    def forward(self, idx, targets):
        logits = self.forward_logits(idx)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


if __name__ == "__main__":
    raise SystemExit("a test model: import it, do not run it")
