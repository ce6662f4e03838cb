"""The April optimizer and schedule options (Polar-Express and MuonEq-R Muon, warmdown as a
fraction of the wall clock with a floor, weight-decay taper, per-group weight decay), the
tokenizer-against-shards check, `golftrain params` and `--threads`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.config import ConfigError, load_config
from trainer.data import DataError, check_tokenizer, whole_documents
from trainer.model import GPT
from trainer.optim.groups import (
    build_optimizers,
    lr_multiplier,
    train_cap_ms,
    train_fraction,
    wd_multiplier,
)
from trainer.optim.muon import (
    NS_COEFFS,
    POLAR_EXPRESS,
    Muon,
    newton_schulz,
    ns_schedule,
    row_normalize,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_polar_express_is_a_per_iteration_schedule_beside_the_quintic():
    assert ns_schedule("quintic", 3) == (NS_COEFFS,) * 3
    assert ns_schedule("polar_express", 5) == POLAR_EXPRESS
    assert ns_schedule("polar_express", 7)[5:] == (POLAR_EXPRESS[-1],) * 2
    with pytest.raises(ValueError):
        ns_schedule("cubic", 5)
    # both orthogonalise; Polar Express leaves the singular values closer to 1
    g = torch.randn(96, 48, generator=torch.Generator().manual_seed(0)).double()
    g = g @ torch.diag(torch.logspace(-2, 0, 48, dtype=torch.float64))
    sq = torch.linalg.svdvals(newton_schulz(g, 5, kind="quintic").double())
    sp = torch.linalg.svdvals(newton_schulz(g, 5, kind="polar_express").double())
    assert (sp - 1).abs().median() < (sq - 1).abs().median()
    assert sp.max() < 1.2 and sq.max() < 1.25


def test_muoneq_r_normalises_rows_before_the_iteration():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    r = row_normalize(g)
    assert torch.allclose(r.norm(dim=1), torch.tensor([1.0, 0.0, 1.0]))
    w = torch.nn.Parameter(torch.randn(8, 4))
    w.grad = torch.randn(8, 4)
    w.grad[0] *= 1000  # one huge row: without normalisation it dominates the update
    ref = w.detach().clone()
    Muon([w], lr=0.1, momentum=0.0, nesterov=False, row_normalize=True).step()
    expect = newton_schulz(row_normalize(w.grad), 5) * 2 ** 0.5
    assert torch.allclose(w.detach(), ref - 0.1 * expect, atol=1e-6)
    with pytest.raises(ValueError):
        Muon([w], ns="cubic")


def _cfg(*sets):
    return load_config("tiny", ["vocab_size=64", *sets])


def test_warmdown_fraction_of_the_wall_clock_with_a_floor():
    cfg = _cfg("max_wallclock_seconds=100", "gptq_reserve_seconds=20", "iterations=100000",
               "warmdown_frac=0.5", "min_lr=0.1")
    assert train_cap_ms(cfg) == 80_000
    assert lr_multiplier(cfg, 10, 20_000) == 1.0          # 25% of the 80 s
    assert lr_multiplier(cfg, 10, 60_000) == pytest.approx(0.5)  # 75%: halfway down
    assert lr_multiplier(cfg, 10, 79_000) == pytest.approx(0.1)  # the floor
    assert train_fraction(cfg, 10, 40_000) == pytest.approx(0.5)
    steps = _cfg("warmdown_frac=0.25", "iterations=400")  # no cap: fraction of iterations
    assert lr_multiplier(steps, 300, 0.0) == 1.0
    assert lr_multiplier(steps, 350, 0.0) == pytest.approx(0.5)
    # min_lr also floors the iteration warmdown
    assert lr_multiplier(_cfg("iterations=100", "warmdown_iters=50", "min_lr=0.2"), 99,
                         0.0) == pytest.approx(0.2)
    with pytest.raises(ConfigError):
        _cfg("max_wallclock_seconds=10", "gptq_reserve_seconds=10")
    with pytest.raises(ConfigError):
        _cfg("warmdown_frac=1.5")


def test_weight_decay_taper_and_separate_group_decays():
    cfg = _cfg("wd_taper_start_frac=0.6", "wd_taper_final_mult=0.5")
    assert wd_multiplier(cfg, 0.5) == 1.0
    assert wd_multiplier(cfg, 0.8) == pytest.approx(0.75)
    assert wd_multiplier(cfg, 1.0) == pytest.approx(0.5)
    assert wd_multiplier(_cfg(), 0.99) == 1.0
    cfg = _cfg("muon_weight_decay=0.09", "adam_weight_decay=0.02", "embed_weight_decay=0.08")
    model = GPT(cfg.model_config())
    opt = build_optimizers(model, cfg, torch.device("cpu"))
    wds = {names[0]: o.param_groups[0]["weight_decay"]
           for o, names in zip(opt.opts, opt.names, strict=True)}
    assert wds["tok_emb.weight"] == 0.08
    assert 0.02 in wds.values()
    assert any(isinstance(o, Muon) and o.param_groups[0]["weight_decay"] == 0.09
               for o in opt.opts)
    opt.set_wd_multiplier(0.5)
    assert sorted(o.param_groups[0]["weight_decay"] for o in opt.opts) == [0.01, 0.04, 0.045]
    # embed_weight_decay < 0 (the default) follows adam_weight_decay, as before
    old = _cfg("adam_weight_decay=0.03")
    assert old.embed_wd == 0.03


def test_baseline_stores_the_same_model_config_as_before():
    """Off options are not stored: a baseline checkpoint's config keeps its old keys."""
    cfg = load_config("baseline")
    assert set(cfg.model_config()) == {
        "vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult",
        "logit_softcap", "rope_base", "qk_gain_init", "tied_embed_init_std"}
    front = load_config("frontier").model_config()
    assert front["num_loops"] == 2 and front["parallel_start"] == 8


def test_tokenizer_check_refuses_a_vocabulary_the_shards_were_not_made_with(shared_data):
    import sentencepiece as spm

    sp1, sp8 = (str(shared_data / f"fineweb_{v}_bpe.model") for v in (1024, 8192))
    texts = [json.loads(line)["text"] for line in
             (shared_data / "c4_2000docs.jsonl").read_text().splitlines()[:12]]

    def stream(sp_path):
        sp = spm.SentencePieceProcessor(model_file=sp_path)
        return np.concatenate([[1, *ids] for ids in sp.encode(texts)]).astype(np.uint16)

    s1, s8 = stream(sp1), stream(sp8)
    assert len(whole_documents(s1)) == 11
    assert len(check_tokenizer(sp1, s1, s1)) == 64
    with pytest.raises(DataError, match="did not make the validation shards"):
        check_tokenizer(sp8, s1, s1)  # sp8192 tokenizer, sp1024 shards: ids all fit
    with pytest.raises(DataError, match="is >= the vocabulary"):
        check_tokenizer(sp1, s8, s8)  # sp1024 tokenizer, sp8192 shards
    with pytest.raises(DataError, match="records"):
        check_tokenizer(sp1, s1, s1, recorded_sha256="00" * 32)


def test_train_refuses_a_mismatched_tokenizer_and_writes_nothing(shared_data, tmp_path):
    from golfeval.data.build import build
    from golfpack.errors import GolfError
    from trainer.train import train

    data = tmp_path / "data"
    tok = shared_data / "fineweb_1024_bpe.model"
    build(tok, shared_data / "fineweb_val_200docs.jsonl", data, val_docs=3, max_docs=12,
          force=True)
    cfg = load_config("tiny", ["iterations=2", "final_eval=false", "val_loss_every=0"])
    out = tmp_path / "run"
    with pytest.raises(GolfError, match="did not make"):
        train(cfg, data, shared_data / "fineweb_8192_bpe.model", out, echo=False)
    assert not out.exists()


def _cli(*args):
    """(exit code, stdout, stderr) of golftrain in this process."""
    from click.testing import CliRunner

    from trainer.cli import main

    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_params_command_known_answers():
    rc, out, err = _cli("params", "--config", "frontier", "--json")
    assert rc == 0, err
    out = json.loads(out)
    assert out["total"] == 35_946_170 == sum(out["families"].values())
    assert out["families"]["embed"] == 8192 * 512
    rc, out, _ = _cli("params", "--config", "baseline")
    assert rc == 0 and out.splitlines()[0] == "model_params:17059912"
    rc, _, err = _cli("params", "--config", "tiny")
    assert rc == 2 and "vocab_size" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli("train", "--data", ".", "--tokenizer", "x", "--out", "o", "--threads", "0")
    assert rc == 2 and "threads" in err.lower()


def test_record_parameter_counts_option_by_option():
    """Every option's own parameters, from the frontier config's 35,946,170 down to the
    records: SmearGate is model_dim, the attention gate heads x dims per layer."""
    from trainer.params import count_params

    full = count_params(load_config("frontier"))["total"]
    no_smear = count_params(load_config("frontier", ["smear_gate=false"]))["total"]
    assert full - no_smear == 512
    no_gate = count_params(load_config("frontier", ["smear_gate=false",
                                                     "attn_gate_dims=0"]))["total"]
    assert no_smear - no_gate == 11 * 8 * 12
    assert no_gate == 35_944_602  # the 2026-04-14 record
    no_par = count_params(load_config("frontier", ["smear_gate=false", "attn_gate_dims=0",
                                                    "parallel_start=0"]))["total"]
    assert no_gate - no_par == 11 * 2 * 2 + 11 * 2
    assert math.isclose(no_par, 35_944_536)
