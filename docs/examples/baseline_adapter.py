"""Scoring adapter: the baseline script's GPT gives only forward(x, y) -> mean loss, and
golf needs logits. golfeval score --checkpoint final_model.pt --config dims.json
--model docs/examples/baseline_adapter.py:build  (BASELINE_SCRIPT = path of train_gpt.py)"""
import os
import types

import torch
import torch.nn.functional as F

from golfpack.foreign.script import build_from_script

SCRIPT = os.environ.get("BASELINE_SCRIPT", "train_gpt.py")


def forward_logits(self, idx):
    """The script's own forward, stopped before the loss."""
    x = F.rms_norm(self.tok_emb(idx), (self.tok_emb.embedding_dim,))
    x0, skips = x, []
    for i in range(self.num_encoder_layers):
        x = self.blocks[i](x, x0)
        skips.append(x)
    for i in range(self.num_decoder_layers):
        if skips:
            x = x + self.skip_weights[i].to(x.dtype) * skips.pop()
        x = self.blocks[self.num_encoder_layers + i](x, x0)
    w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
    z = F.linear(self.final_norm(x), w.to(x.dtype))
    return self.logit_softcap * torch.tanh(z / self.logit_softcap)


def build(hp):
    """Called with the hyperparameters (--config values over the defaults)."""
    gpt, _, _ = build_from_script(f"{SCRIPT}:GPT", vars(hp))
    gpt.forward_logits = types.MethodType(forward_logits, gpt)
    return gpt
