"""The CUDA path (bf16 autocast, sdpa, nccl under torchrun). Skipped without a GPU; on a GPU
machine run `pytest tests/test_score_cuda.py -q`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tinymodels import live_gpt

from golfeval.score.core import score_tokens
from golfpack.checkpoint import save

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
V = 512


@pytest.fixture(scope="module")
def model():
    m, cfg = live_gpt(vocab_size=V, num_layers=4, model_dim=128)
    return m.eval(), cfg


def _stream(n, seed=0, docs=False):
    rng = np.random.default_rng(seed)
    t = rng.integers(2, V, n)
    if docs:
        t[rng.choice(n, n // 40, replace=False)] = 1
        t[0] = 1
    return t.astype(np.uint16), rng.integers(0, 5, n - 1)


@pytest.mark.parametrize("doc_isolation", [False, True])
def test_cuda_matches_cpu(model, doc_isolation):
    m, _ = model
    tokens, tb = _stream(3000, docs=doc_isolation)
    kw = dict(seq_len=256, stride=32, batch=8, doc_isolation=doc_isolation, per_token=True)
    cpu = score_tokens(m.cpu(), tokens, tb, device="cpu", **kw)
    gpu = m.cuda()
    fp32 = score_tokens(gpu, tokens, tb, device="cuda", amp=False, **kw)
    bf16 = score_tokens(gpu, tokens, tb, device="cuda", **kw)
    assert fp32.scored_tokens == bf16.scored_tokens == cpu.scored_tokens == 2999
    assert fp32.bytes_sum == bf16.bytes_sum == cpu.bytes_sum
    np.testing.assert_allclose(fp32.per_token_nats, cpu.per_token_nats, rtol=0, atol=2e-4)
    assert math.isclose(fp32.val_bpb, cpu.val_bpb, rel_tol=1e-6)
    assert math.isclose(bf16.val_bpb, cpu.val_bpb, rel_tol=2e-2)


def test_cuda_batch_invariance(model):
    """fp32 on CUDA: sums agree to 1e-9 whatever the batch; bf16 to 1e-6 (cuBLAS may pick
    other kernels for other batch shapes)."""
    m, _ = model
    m = m.cuda()
    tokens, tb = _stream(4000, seed=1)
    for amp, tol in ((False, 1e-9), (True, 1e-6)):
        runs = [score_tokens(m, tokens, tb, seq_len=256, stride=32, batch=b, device="cuda",
                             amp=amp) for b in (1, 7, 32)]
        for r in runs[1:]:
            rel = abs(r.nats_sum - runs[0].nats_sum) / runs[0].nats_sum
            print(f"amp={amp} batch-invariance rel diff {rel:.3e}")
            assert rel <= tol


def test_compiled_cli_matches_eager(model, tmp_path, tiny_shards, tiny_tokenizer):
    """--compile (the CUDA default), including the recompile for a short last batch."""
    from golfeval.score.evaluate import evaluate

    m, cfg = model
    ckpt = tmp_path / "m.safetensors"
    save(ckpt, {k: v.cpu() for k, v in m.state_dict().items()}, cfg.to_dict())
    common = dict(checkpoint=ckpt, data=tiny_shards, tokenizer=tiny_tokenizer, seq_len=256,
                  stride=32, max_tokens=20000, batch=16, device="cuda")
    eager = evaluate(compile_model=False, **common)
    compiled = evaluate(**common)
    assert compiled["compiled"] and not eager["compiled"]
    assert compiled["windows"] % 16 and compiled["scored_tokens"] == eager["scored_tokens"]
    assert math.isclose(compiled["val_bpb"], eager["val_bpb"], rel_tol=1e-2)
    iso = evaluate(doc_isolation=True, **common)
    assert math.isclose(iso["val_bpb"], evaluate(doc_isolation=True, compile_model=False,
                                                 **common)["val_bpb"], rel_tol=1e-2)


@pytest.mark.parametrize("nproc", [1, 2])
def test_torchrun_cuda(model, tmp_path, tiny_shards, tiny_tokenizer, nproc):
    if nproc > torch.cuda.device_count():
        pytest.skip(f"needs {nproc} GPUs for nccl")
    m, cfg = model
    ckpt = tmp_path / "m.safetensors"
    save(ckpt, {k: v.cpu() for k, v in m.state_dict().items()}, cfg.to_dict())
    args = ["--checkpoint", str(ckpt), "--data", str(tiny_shards), "--tokenizer",
            str(tiny_tokenizer), "--seq-len", "256", "--stride", "32", "--max-tokens", "20000",
            "--device", "cuda", "--json"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "golfeval", "score", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(proc.stdout)
    assert rep["ranks"] == nproc and rep["scored_tokens"] == 19_999 and rep["amp"] == "bf16"
    assert rep["device"].startswith("cuda")
