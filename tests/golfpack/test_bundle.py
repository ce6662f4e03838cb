"""`golfpack decoder` and `golfpack bundle` from the command line: the files they write, the
decoder bytes counted by compress/inspect, and a bundle that runs like its script in an
interpreter where golf is not importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from golfpack import decoder as gd
from golfpack.artifact import encode_artifact, parse_artifact
from golfpack.cli import main
from golfpack.quant.qmodel import quantize_state_dict

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = '''from __future__ import annotations

import sys

from golf_decode import load


def main(path: str) -> None:
    sd, config = load(path)
    print(len(sd), sorted(config), float(sum(t.float().sum() for t in sd.values())))


if __name__ == "__main__":
    main(sys.argv[1])
'''


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    sd = {"a.weight": torch.randn(32, 64), "a.bias": torch.randn(32), "n": torch.arange(3)}
    qm = quantize_state_dict(sd, "@control=fp32;*.bias=fp16;n=raw;*=int6")
    data, _ = encode_artifact(qm, {"d": 1}, codec="auto")
    path = d / "m.golf"
    path.write_bytes(data)
    return path


def _expected(path) -> str:
    sd = parse_artifact(path.read_bytes()).state_dict()
    return f"{len(sd)} ['d'] {float(sum(t.float().sum() for t in sd.values()))}"


def test_decoder_command(art, tmp_path):
    out = tmp_path / "golf_decode.py"
    r = run("decoder", "-o", out, "--for", art, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["bytes"] == out.stat().st_size and "ans" in rep["features"] or \
        "zstd" in rep["features"] or "brotli" in rep["features"]
    assert run("decoder", "-o", out).exit_code == 2  # exists: --force needed
    r = run("decoder", "-o", out, "--force", "--code-mode", "minified", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["bytes"] == out.stat().st_size
    assert out.stat().st_size == gd.decoder_bytes(None, "minified")


def test_inspect_counts_the_decoder_and_no_decoder_is_checked(art, tmp_path):
    feats = gd.features_of(parse_artifact(art.read_bytes()))
    for mode in ("raw", "minified"):
        r = run("inspect", art, "--code-mode", mode, "--json")
        rep = json.loads(r.output)
        assert rep["decoder_bytes"] == gd.decoder_bytes(feats, mode)
        assert rep["total_bytes"] == rep["model_bytes"] + rep["decoder_bytes"]
    plain = tmp_path / "plain.py"
    plain.write_text("print('no decoder here')\n")
    r = run("inspect", art, "--code", plain, "--no-decoder")
    assert r.exit_code == 2 and "decoder" in r.output and r.output.count("\n") == 1
    r = run("inspect", art, "--no-decoder")
    assert r.exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raw", "minified"])
def test_bundle_runs_like_its_script_without_golf(art, tmp_path, mode):
    from test_decoder import isolated  # noqa: PLC0415  (the shared isolation harness)

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"train_gpt_{mode}.py"
    r = run("bundle", script, "-o", out, "--artifact", art, "--code-mode", mode, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["bytes"] == out.stat().st_size
    assert sum(rep["parts"].values()) == rep["bytes"] or mode == "minified"
    # its size is exactly what compress/inspect count with --no-decoder
    r = run("inspect", art, "--code", out, "--no-decoder", "--json")
    assert r.exit_code == 0, r.output
    ins = json.loads(r.output)
    assert ins["code_bytes"] == out.stat().st_size and ins["decoder_bytes"] == 0
    # it runs like the script, where golf cannot be imported
    code = (f"import runpy, sys\nsys.argv = [{str(out)!r}, {str(art)!r}]\n"
            f"runpy.run_path({str(out)!r}, run_name='__main__')\n")
    res = isolated(tmp_path, code, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == _expected(art)


USES_GOLF = '''import sys

import torch

from golf_decode import load
from golfpack.quant.rows import dequantize, parse_scheme, quantize

sd, _ = load(sys.argv[1])
r = quantize(sd["a.weight"], parse_scheme("int4:amax"))
print(int(r.codes.abs().sum()), float(dequantize(r.codes, r.scales).sum()))
'''


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raw", "minified"])
def test_bundle_carries_the_golf_code_the_script_runs(art, tmp_path, mode):
    from test_decoder import isolated  # noqa: PLC0415  (the shared isolation harness)

    script = tmp_path / "uses_golf.py"
    script.write_text(USES_GOLF)
    want = subprocess.run([sys.executable, str(script), str(art)], capture_output=True,
                          text=True, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert want.returncode != 0  # golf_decode only exists inside a bundle...
    out = tmp_path / f"b_{mode}.py"
    r = run("bundle", script, "-o", out, "--artifact", art, "--code-mode", mode, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert "golfpack.quant.rows" in rep["golf_modules"] and "golfpack.errors" in rep["golf_modules"]
    assert rep["bytes"] == out.stat().st_size
    code = (f"import runpy, sys\nsys.argv = [{str(out)!r}, {str(art)!r}]\n"
            f"runpy.run_path({str(out)!r}, run_name='__main__')\n")
    res = isolated(tmp_path, code, tmp_path)  # golf itself is not importable there
    assert res.returncode == 0, res.stderr[-2000:]
    from golfpack.quant.rows import dequantize, parse_scheme, quantize

    w = parse_artifact(art.read_bytes()).state_dict()["a.weight"]
    q = quantize(w, parse_scheme("int4:amax"))
    assert res.stdout.strip() == f"{int(q.codes.abs().sum())} " \
        f"{float(dequantize(q.codes, q.scales).sum())}"


def test_plain_script_without_bundle_still_runs(tmp_path):
    """Sanity for the harness: the bundle's prelude is what makes `golf_decode` importable."""
    script = tmp_path / "t.py"
    script.write_text(SCRIPT)
    res = subprocess.run([sys.executable, "-I", str(script), "x"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert res.returncode != 0 and "golf_decode" in res.stderr


@pytest.mark.parametrize("mode", ["raw", "minified"])
def test_bundle_of_a_script_that_declares_latin1(tmp_path, mode):
    """A script that declares its encoding (as self-extracting wrappers do) is read in it,
    the closure's reader included: no UnicodeDecodeError, the bundle runs like the script."""
    from golfpack.bundle import build_bundle

    script = tmp_path / "l1.py"
    script.write_bytes(b"# -*- coding: latin-1 -*-\nfrom golfpack.quant.rows import "
                       b"parse_scheme\nprint(parse_scheme('int6').bits, '\xe9')\n")
    data, _ = build_bundle(script, mode=mode)
    (tmp_path / "out.py").write_bytes(data)
    res = subprocess.run([sys.executable, "-I", str(tmp_path / "out.py")], capture_output=True,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode("utf-8").split() == ["6", "\xe9"]


ENCODES = '''import torch

from golfpack.compress import compress_state_dict

g = torch.Generator().manual_seed(0)
sd = {"a.weight": torch.randn(32, 64, generator=g), "a.bias": torch.randn(32, generator=g)}
data, rep = compress_state_dict(sd, {"d": 1}, scheme_spec="@control=fp32;*.bias=fp16;*=int6")
print(len(data), rep["decoder_bytes"], rep["total_bytes"])
'''


@pytest.mark.slow
def test_bundle_of_a_script_that_compresses_at_the_end(tmp_path):
    """The whole encode path (golfpack.compress and its imports) runs from the bundle."""
    from test_decoder import isolated  # noqa: PLC0415

    script = tmp_path / "enc.py"
    script.write_text(ENCODES)
    want = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert want.returncode == 0, want.stderr[-1000:]
    out = tmp_path / "b.py"
    r = run("bundle", script, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert {"golfpack.compress", "golfpack.format.codecs", "golfpack.decoder.template"} \
        <= set(rep["golf_modules"])
    code = f"import runpy\nrunpy.run_path({str(out)!r}, run_name='__main__')\n"
    res = isolated(tmp_path, code, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == want.stdout


QUANTIZES = '''import torch

from golfpack.quant.rows import dequantize, parse_scheme, quantize

w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
r = quantize(w, parse_scheme("int4:amax"))
print(int(r.codes.abs().sum()), float(dequantize(r.codes, r.scales).sum()))
'''
SCORES = '''import numpy as np
import torch

from golfeval.score.core import score_tokens


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Parameter(torch.randn(16, 8, generator=g))
        self.head = torch.nn.Parameter(torch.randn(8, 16, generator=g))

    def forward(self, idx):
        return self.emb[idx] @ self.head


tokens = np.random.default_rng(0).integers(0, 16, 200).astype(np.int64)
res = score_tokens(Tiny(), tokens, np.full(199, 2, dtype=np.int64), mode="sliding",
                   seq_len=32, stride=8, batch=4)
print(res.val_loss, res.val_bpb, res.scored_tokens)
'''
PRUNED = {"encodes": (ENCODES, ["raw"]), "quantizes": (QUANTIZES, ["raw"]),
          "scores": (SCORES, ["raw", "minified"])}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRUNED))
def test_pruned_bundle_runs_like_its_script_and_is_smaller(art, tmp_path, name):
    """Only the golf functions the script calls are carried: the bundle runs where golf is
    not importable with the script's output, is smaller than the whole-module bundle, and
    its size is what inspect counts with --no-decoder."""
    from test_decoder import isolated  # noqa: PLC0415

    text, modes = PRUNED[name]
    script = tmp_path / f"{name}.py"
    script.write_text(text)
    want = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert want.returncode == 0, want.stderr[-1000:]
    for mode in modes:
        out, whole = tmp_path / f"p_{mode}.py", tmp_path / f"w_{mode}.py"
        r = run("bundle", script, "-o", out, "--code-mode", mode, "--json")
        assert r.exit_code == 0, r.output
        rep = json.loads(r.output)
        r = run("bundle", script, "-o", whole, "--code-mode", mode, "--whole-modules",
                "--json")
        assert r.exit_code == 0, r.output
        wrep = json.loads(r.output)
        assert rep["golf_pruning"] == "functions" and wrep["golf_pruning"] == "whole-modules"
        assert rep["bytes"] == out.stat().st_size < whole.stat().st_size == wrep["bytes"]
        pk = rep["golf_packages"]
        assert all(pk[k]["raw_bytes"] < wrep["golf_packages"][k]["raw_bytes"] for k in pk)
        assert sum(rep["parts"].values()) == rep["bytes"] or mode == "minified"
        assert sum(v["bytes"] for v in pk.values()) == \
            sum(v for k, v in rep["parts"].items() if k.startswith("golf:"))
        r = run("inspect", art, "--code", out, "--no-decoder", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["code_bytes"] == out.stat().st_size
        code = f"import runpy\nrunpy.run_path({str(out)!r}, run_name='__main__')\n"
        res = isolated(tmp_path, code, tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout == want.stdout


LEAN = '''import sys

import torch

from golfpack.encode import {fn}, save_artifact

g = torch.Generator().manual_seed(0)
sd = {{"blocks.0.mlp.fc.weight": torch.randn(64, 96, generator=g),
       "blocks.1.mlp.fc.weight": torch.randn(64, 96, generator=g),
       "a.bias": torch.randn(32, generator=g), "n": torch.arange(5)}}
data = {fn}(sd, {{"d": 1}}, scheme_spec={spec!r}, codec={codec!r})
print(save_artifact(sys.argv[1], data))
'''
LEAN_SPEC = "@control=fp32;*.bias=fp16;n=raw;*=int6:gptq-lite"


@pytest.mark.slow
@pytest.mark.parametrize("fn,codec", [("encode_state_dict", "ans"),
                                      ("encode_state_dict_general", "zstd")])
def test_lean_encode_bundle_writes_the_same_artifact_without_golf(tmp_path, fn, codec):
    """The submission entry point's bundle runs where golf is not importable and writes
    the bytes encode_artifact and compress_state_dict give; its closure carries no reader,
    report or decoder template (nor, for a general codec, the ans coder)."""
    from test_decoder import isolated  # noqa: PLC0415

    from golfpack.compress import compress_state_dict

    script = tmp_path / "lean.py"
    script.write_text(LEAN.format(fn=fn, spec=LEAN_SPEC, codec=codec))
    out = tmp_path / "b.py"
    r = run("bundle", script, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    mods = set(json.loads(r.output)["golf_modules"])
    assert not mods & {"golfpack.format.reader", "golfpack.format.header", "golfpack.decoder",
                       "golfpack.decoder.template", "golfpack.accounting",
                       "golfpack.quant.lowrank"}, mods
    assert ("golfpack.ans.rans" in mods) == (codec == "ans")
    assert ("golfpack.ans.fit" in mods) == (codec == "ans")
    art = tmp_path / "m.golf"
    code = (f"import runpy, sys\nsys.argv = [{str(out)!r}, {str(art)!r}]\n"
            f"runpy.run_path({str(out)!r}, run_name='__main__')\n")
    res = isolated(tmp_path, code, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    g = torch.Generator().manual_seed(0)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(64, 96, generator=g),
          "blocks.1.mlp.fc.weight": torch.randn(64, 96, generator=g),
          "a.bias": torch.randn(32, generator=g), "n": torch.arange(5)}
    want, _ = encode_artifact(quantize_state_dict(sd, LEAN_SPEC), {"d": 1}, codec=codec)
    assert art.read_bytes() == want and res.stdout.strip() == str(len(want))
    assert compress_state_dict(sd, {"d": 1}, scheme_spec=LEAN_SPEC, codec=codec)[0] == want


def test_lean_encode_matches_encode_artifact_for_every_codec():
    """Same bytes as the reporting path for every codec (auto: as encode_artifact chooses
    without a decoder mode); a general-only call refuses ans/auto."""
    from golfpack.encode import encode_state_dict, encode_state_dict_general
    from golfpack.errors import ArtifactError

    g = torch.Generator().manual_seed(1)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(48, 80, generator=g),
          "a.bias": torch.randn(16, generator=g), "n": torch.arange(3)}
    qm = quantize_state_dict(sd, LEAN_SPEC)
    for codec in ("ans", "auto", "zstd", "brotli", "lzma", "zlib"):
        want = encode_artifact(qm, {"d": 1}, codec=codec)[0]
        assert encode_state_dict(sd, {"d": 1}, scheme_spec=LEAN_SPEC, codec=codec) == want
        if codec not in ("ans", "auto"):
            assert encode_state_dict_general(sd, {"d": 1}, scheme_spec=LEAN_SPEC,
                                             codec=codec) == want
    for bad in ("ans", "auto"):
        with pytest.raises(ArtifactError, match="general codec"):
            encode_state_dict_general(sd, {}, codec=bad)
    with pytest.raises(ArtifactError, match="unknown codec"):
        encode_state_dict(sd, {}, codec="gzip")


def test_minified_bundle_needs_brotli_only_where_its_decoder_does(tmp_path):
    """The bundle's wrapper follows the decoder's rule (decoder.wrapper_compressors): an
    artifact without brotli gets a bundle that runs where brotli is not installed."""
    from golfpack.bundle import build_bundle

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    feats = {"zstd", "quant", "float", "raw"}
    out, _ = build_bundle(script, feats, "minified")
    assert out.startswith(b"#coding:l1\nimport lzma;")
    assert out.startswith(gd.decoder_file(feats, "minified")[:len(b"#coding:l1\nimport lzma;")])
