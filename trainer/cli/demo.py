"""`make demo`: the whole toolkit on text that ships with Python, in a few minutes on a CPU.

Every step runs the same command a user would type (printed before it runs), so the demo is
also a worked example: build a tokenizer and shards, train the tiny config with QAT, compress,
score flat / sliding / with LoRA and SGD test-time training, train two short configurations
x 3 seeds and test the difference for significance, then print one summary table.

    python -m trainer.cli.demo [--out DIR] [--quick] [--force] [--json]

With GOLF_DATA=DIR (a folder holding one *.jsonl corpus and one *.model tokenizer, e.g.
../shared/data) those are used instead of the pydoc corpus.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time

import click

from golfpack.errors import CheckFailed, GolfError

BUDGET = 16_000_000
EXPORT = "int6"  # the main run trains with QAT for this grid and is compressed on it


MODEL_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "model.py")  # the code the demo's artifact is counted with


def _bin(name: str) -> str:
    exe = os.path.join(os.path.dirname(sys.executable), name)
    return exe if os.path.exists(exe) else name


class Demo:
    """Runs the steps, remembers where every file went, and collects the figures."""

    def __init__(self, out: str, quick: bool, quiet: bool):
        self.out, self.quick, self.quiet = out, quick, quiet
        self.files: dict[str, str] = {}
        self.figures: dict = {}
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if not self.quiet:
            click.echo(text, err=True)

    def run(self, args: list[str], want_json: bool = True, ok_codes=(0,)):
        self.say("$ " + " ".join(shlex.quote(a) for a in args))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.run(args, capture_output=True, text=True, env=env)
        if proc.returncode not in ok_codes:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise GolfError(f"demo step failed ({args[0]} {args[1]}): {tail}")
        if not want_json:
            return proc
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise GolfError(f"demo step {args[1]} printed no JSON") from None

    # -- steps ---------------------------------------------------------------------------
    def corpus_and_tokenizer(self) -> tuple[str, str, int]:
        from golfeval.data.corpus import pydoc_documents, write_jsonl
        from golfeval.data.tokenizer import train

        data = os.environ.get("GOLF_DATA")
        if data:
            corpora = sorted(glob.glob(os.path.join(data, "*.jsonl")))
            models = sorted(glob.glob(os.path.join(data, "*1024*.model"))
                            or glob.glob(os.path.join(data, "*.model")))
            if not corpora or not models:
                raise GolfError(f"GOLF_DATA={data} needs a *.jsonl corpus and a *.model tokenizer")
            corpus = next((c for c in corpora if "fineweb" in c), corpora[0])
            self.say(f"using GOLF_DATA: corpus {corpus}, tokenizer {models[0]}")
            n_docs = sum(1 for line in open(corpus, encoding="utf-8") if line.strip())
            return corpus, models[0], n_docs
        docs = pydoc_documents()
        corpus = write_jsonl(docs, os.path.join(self.out, "corpus.jsonl"))
        self.say(f"corpus: {len(docs)} documents from Python's pydoc topics -> {corpus}")
        self.say("training a 1024-piece BPE tokenizer (challenge settings) ...")
        tok = train(docs, os.path.join(self.out, "tokenizer_1024"), vocab_size=1024)
        return corpus, tok, len(docs)

    def main_run(self, data_dir: str, tok: str) -> str:
        run_dir = os.path.join(self.out, "run_main")
        steps = 120 if self.quick else 400
        sets = [f"iterations={steps}", f"warmdown_iters={steps // 4}", "qat=on",
                f"export_scheme={EXPORT}", f"val_loss_every={steps // 2}",
                f"checkpoint_every={steps // 2}", "train_log_every=50",
                "val_max_tokens=16384", "final_sliding=false", "compile=false",
                "device=cpu"]
        args = [_bin("golftrain"), "train", "--config", "tiny", "--data", data_dir,
                "--tokenizer", tok, "--out", run_dir, "--force", "--json"]
        for s in sets:
            args += ["--set", s]
        summary = self.run(args)
        self.figures["train"] = {"steps": summary.get("steps"),
                                 "train_time_s": summary.get("train_time_ms", 0) / 1000.0,
                                 "tokens_per_s": summary.get("tokens_per_s")}
        return run_dir

    def compress(self, run_dir: str, tok: str) -> str:
        # the spec QAT trained for: its own @ rule switches off golfpack's fp16 passthrough
        # of small tensors, which would otherwise keep every matrix of the tiny model in fp16
        from trainer.qat import expand_spec

        art = os.path.join(self.out, "model.golf")
        rep = self.run([_bin("golfpack"), "compress", os.path.join(run_dir, "final.safetensors"),
                        "-o", art, "--scheme", expand_spec(EXPORT), "--tokenizer", tok,
                        "--code", MODEL_SOURCE,
                        "--code-mode", "minified", "--force", "--json"])
        self.figures["bytes"] = {k: rep.get(k) for k in
                                 ("model_bytes", "code_bytes", "decoder_bytes", "total_bytes",
                                  "budget", "headroom", "header_bytes")}
        self.files["artifact"] = art
        return art

    def score(self, art: str, data_dir: str, tok: str) -> None:
        seq = "128"
        base = [_bin("golfeval"), "score", "--artifact", art, "--data", data_dir,
                "--tokenizer", tok, "--seq-len", seq, "--json"]
        if self.quick:
            base += ["--max-tokens", "8192"]
        modes = {"flat": ["--mode", "flat"], "sliding": ["--mode", "sliding", "--stride", "32"],
                 "lora_ttt": ["--mode", "sliding", "--stride", "32", "--ttt", "lora",
                              "--ttt-chunk", "64"],
                 "sgd_ttt": ["--mode", "sliding", "--stride", "32", "--ttt", "sgd",
                             "--ttt-chunk", "2048" if self.quick else "8192",
                             "--ttt-epochs", "1"]}
        self.figures["bpb"] = {}
        for name, extra in modes.items():
            res = self.run(base + extra)
            self.figures["bpb"][name] = {"val_bpb": res["val_bpb"], "val_loss": res["val_loss"],
                                         "scored_tokens": res.get("scored_tokens"),
                                         "seconds": res.get("seconds")}

    def seeds(self, data_dir: str, tok: str) -> None:
        """Two short configurations (matrix lr 0.04 vs 0.01) x 3 seeds, then significance."""
        steps = 10 if self.quick else 60
        logs: dict[str, list[str]] = {"A": [], "B": []}
        for name, lr in (("A", 0.04), ("B", 0.01)):
            for seed in (1, 2, 3):
                d = os.path.join(self.out, f"seeds_{name}", f"seed{seed}")
                args = [_bin("golftrain"), "train", "--config", "tiny", "--data", data_dir,
                        "--tokenizer", tok, "--out", d, "--force", "--json"]
                for s in (f"iterations={steps}", f"warmdown_iters={steps // 4}",
                          f"seed={seed}", f"matrix_lr={lr}", "val_loss_every=0",
                          "checkpoint_every=0", "final_sliding=false", "compile=false",
                          "val_max_tokens=8192", "device=cpu"):
                    args += ["--set", s]
                self.run(args)
                # name the log by seed so the log reader sees three distinct runs
                named = os.path.join(os.path.dirname(d), f"train_seed{seed}.log")
                shutil.copyfile(os.path.join(d, "train.log"), named)
                logs[name].append(named)
            self.files[f"seed runs {name} (lr {lr})"] = os.path.join(self.out, f"seeds_{name}")
        sota = [arg for path in logs["B"] for arg in ("--sota", path)]
        sig = self.run([_bin("golfeval"), "significance", *logs["A"], *sota,
                        "--rule", "frontier", "--plot",
                        os.path.join(self.out, "significance.png"), "--force", "--json"],
                       ok_codes=(0, 1))
        self.files["significance plot"] = os.path.join(self.out, "significance.png")
        self.figures["significance"] = sig

    # -- report --------------------------------------------------------------------------
    def summary(self) -> dict:
        b = self.figures.get("bytes", {})
        bpb = self.figures.get("bpb", {})
        sig = self.figures.get("significance", {})
        return {"bytes": b, "fits": (b.get("total_bytes") or math.inf) <= BUDGET,
                "bpb": bpb, "train": self.figures.get("train"),
                "significance": _sig_summary(sig), "files": self.files,
                "seconds": time.perf_counter() - self.t0, "quick": self.quick}


def _sig_summary(sig: dict) -> dict:
    if not sig:
        return {}
    welch = sig.get("welch") or {}
    verdicts = sig.get("verdicts") or sig.get("verdict") or {}
    return {"welch_t": welch.get("t"), "welch_df": welch.get("df"), "welch_p": welch.get("p"),
            "verdicts": verdicts, "delta_bpb": sig.get("delta_bpb")}


def render(s: dict) -> str:
    b, lines = s["bytes"], []
    lines.append("")
    lines.append("golf demo summary" + ("  (--quick)" if s["quick"] else ""))
    lines.append("-" * 64)
    if b:
        lines.append(f"artifact   {b['model_bytes']:>12,} B  (header {b['header_bytes']:,} B)")
        lines.append(f"code       {b['code_bytes']:>12,} B  (minified model.py + the golf "
                     f"decoder, {b.get('decoder_bytes') or 0:,} B)")
        lines.append(f"total      {b['total_bytes']:>12,} B  of {BUDGET:,}  "
                     f"({'FITS' if s['fits'] else 'OVER'}, headroom {b['headroom']:,} B)")
    for mode, r in s["bpb"].items():
        lines.append(f"{mode:<10} val_bpb {r['val_bpb']:.6f}  val_loss {r['val_loss']:.6f}  "
                     f"({r['scored_tokens']:,} tokens, {r['seconds']:.1f} s)")
    sig = s.get("significance") or {}
    if sig:
        v = sig["verdicts"] if isinstance(sig["verdicts"], dict) else {}
        verdicts = "; ".join(
            f"{rule} rule: {'significant' if r.get('significant') else 'not significant'}"
            f" (p={r.get('p', float('nan')):.3g}, threshold {r.get('threshold')})"
            for rule, r in v.items() if isinstance(r, dict)) or str(sig["verdicts"])
        lines.append(f"A (lr 0.04) vs B (lr 0.01), 3 seeds each: Welch t={sig['welch_t']:.3f} "
                     f"df={sig['welch_df']:.2f} p={sig['welch_p']:.4g}")
        lines.append(f"           verdicts: {verdicts}")
    lines.append("files:")
    for k, v in s["files"].items():
        lines.append(f"  {k:<24} {v}")
    lines.append(f"done in {s['seconds']:.0f} s")
    return "\n".join(lines)


def run_demo(out: str, quick: bool = False, force: bool = False, quiet: bool = False) -> dict:
    """Run every step; return the summary dict (also written to OUT/summary.json)."""
    from golfpack.fileio import atomic_write_bytes

    if os.path.isdir(out) and os.listdir(out) and not force:
        raise GolfError(f"{out} is not empty; pass --force to reuse it")
    os.makedirs(out, exist_ok=True)
    demo = Demo(out, quick, quiet)
    corpus, tok, n_docs = demo.corpus_and_tokenizer()
    demo.files.update(corpus=corpus, tokenizer=tok)
    data_dir = os.path.join(out, "data")
    val_docs = max(4, min(10, n_docs // 5)) if quick else max(10, min(60, n_docs // 5))
    demo.run([_bin("golfeval"), "data", "build", "--tokenizer", tok, "--docs", corpus,
              "--out", data_dir, "--val-docs", str(val_docs), "--force", "--json"])
    demo.files["shards"] = data_dir
    run_dir = demo.main_run(data_dir, tok)
    demo.files.update(run=run_dir, log=os.path.join(run_dir, "train.log"),
                      checkpoint=os.path.join(run_dir, "final.safetensors"))
    art = demo.compress(run_dir, tok)
    demo.score(art, data_dir, tok)
    demo.seeds(data_dir, tok)
    summary = demo.summary()
    path = os.path.join(out, "summary.json")
    summary["files"]["summary"] = path
    atomic_write_bytes(path, json.dumps(summary, indent=1).encode(), force=True)
    return summary


def check_summary(s: dict) -> None:
    """The sanity checks CI runs on the demo's output."""
    if not s["fits"]:
        raise CheckFailed("demo artifact is over the 16,000,000-byte cap")
    for mode, r in s["bpb"].items():
        if not math.isfinite(r["val_bpb"]) or r["val_bpb"] <= 0:
            raise CheckFailed(f"demo {mode} bpb is not a positive finite number")
    if s["bpb"]["sliding"]["val_bpb"] > s["bpb"]["flat"]["val_bpb"] + 1e-9:
        raise CheckFailed("sliding-window bpb is worse than flat bpb")


@click.command()
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="where every file goes")
@click.option("--quick", is_flag=True, help="a reduced run (the one CI executes)")
@click.option("--force", is_flag=True, help="reuse a non-empty --out")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def main(out, quick, force, as_json):
    """Run the whole golf pipeline on an embedded corpus and print one summary table."""
    s = run_demo(out, quick=quick, force=force, quiet=False)
    check_summary(s)
    if as_json:
        from golfpack.cli.kit import emit_json

        emit_json(s)  # strict JSON, as every --json
    else:
        click.echo(render(s))


if __name__ == "__main__":
    from golfpack.cli.kit import LazyGroup

    # one-line errors and exit codes, like the three CLIs
    group = LazyGroup(name="demo")
    group.add_command(main, "run")
    sys.exit(group.main(["run", *sys.argv[1:]], prog_name="python -m trainer.cli.demo"))
