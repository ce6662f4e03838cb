"""Library errors name parameters (`force`, `max_tokens`); the CLIs write them as their own
flags, read off each click command's options (golfpack.cli.kit)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from golfpack.cli.kit import LazyGroup, flag_table, with_flags
from golfpack.errors import GolfError, Note


@click.command()
@click.option("--max-tokens", type=int)
@click.option("--config", "config_path")
@click.option("--no-decoder", is_flag=True)
@click.option("--compile/--no-compile", "compile_model", default=None)
@click.option("--force", is_flag=True)
def _cmd(**kw):
    raise GolfError("x.golf exists; pass `force=True` to overwrite it; `max_tokens` too",
                    param=("force", "max_tokens"))


def test_parameters_are_written_as_the_commands_flags():
    table = flag_table([_cmd])
    cases = {
        "`max_tokens` must be at least 2": "--max-tokens must be at least 2",
        "pass `config`": "pass --config",                 # found by the flag's words
        "pass `config_path`": "pass --config",            # and by the option's name
        "with `decoder=False`": "with --no-decoder",       # an off switch
        "`compile_model=False` and `compile_model=True`": "--no-compile and --compile",
        "`max_tokens=7` is too few": "--max-tokens 7 is too few",
        "`seed` is not an option here": "`seed` is not an option here",
    }
    for text, want in cases.items():
        params = ("max_tokens", "config", "config_path", "decoder", "compile_model", "seed")
        assert with_flags(text, params, table) == want
    # only the parameters the message declares are rewritten
    assert with_flags("pass `force=True`", (), table) == "pass `force=True`"


def test_the_group_prints_the_error_with_flags_and_exit_2():
    @click.group(cls=LazyGroup)
    def main():
        pass

    main.add_command(_cmd, "go")
    r = CliRunner().invoke(main, ["go"])
    assert r.exit_code == 2
    assert r.output == ("error: x.golf exists; pass --force to overwrite it; --max-tokens "
                        "too\n")


def test_notes_keep_library_names_outside_a_cli():
    note = Note("pass `bpb_per_nat`", param="bpb_per_nat")
    assert note == "pass `bpb_per_nat`" and note.params == ("bpb_per_nat",)
    assert GolfError("plain").params == ()


def test_golfpack_compress_over_an_existing_output(tmp_path):
    from golfpack.cli import main

    ckpt, out = tmp_path / "m.safetensors", tmp_path / "m.golf"
    ckpt.write_bytes(b"x")
    out.write_bytes(b"keep")
    r = CliRunner().invoke(main, ["compress", str(ckpt), "-o", str(out)])
    assert r.exit_code == 2
    assert r.output.strip() == f"error: {out} exists; pass --force to overwrite it"
    assert out.read_bytes() == b"keep"


def test_golfeval_score_per_token_needs_sliding(tmp_path):
    from golfeval.cli import main

    r = CliRunner().invoke(main, ["score", "--checkpoint", str(tmp_path / "c"), "--data",
                                  str(tmp_path), "--tokenizer", str(tmp_path / "t.model"),
                                  "--mode", "sliding-record", "--per-token",
                                  str(tmp_path / "p.npy")])
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert r.output.startswith("error: --per-token writes exact per-target losses: use "
                               "--mode sliding (")


def test_golftrain_existing_run_names_resume_and_force(tmp_path, tiny_tokenizer):
    from trainer.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "train.log").write_text("old")
    r = CliRunner().invoke(main, ["train", "--config", "tiny", "--data", str(tmp_path / "d"),
                                  "--tokenizer", str(tiny_tokenizer), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == (f"error: {out} already holds a run (train.log); pass "
                                "--resume to continue it or --force to start over")


def test_golftrain_params_names_set(tmp_path):
    from trainer.cli import main

    r = CliRunner().invoke(main, ["params", "--config", "tiny", "--set", "iteratoins=5"])
    assert r.exit_code == 2
    assert "unknown config key 'iteratoins' in --set (did you mean 'iterations'?)" in r.output


def test_golfeval_data_build_names_force(tmp_path, tiny_tokenizer, pydoc_corpus):
    from golfeval.cli import main

    out = tmp_path / "shards"
    out.mkdir()
    (out / "x").write_text("keep")
    r = CliRunner().invoke(main, ["data", "build", "--tokenizer", str(tiny_tokenizer),
                                  "--docs", str(pydoc_corpus), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == f"error: {out} is not empty; pass --force to write into it"


def test_a_command_without_the_option_gets_the_messages_fallback():
    table = flag_table([_cmd])
    note = Note("no claim; add it to submission.json or pass `claim`", param="claim",
                fallback="no claim; add it to submission.json")
    assert with_flags(note, note.params, table, fallback=note.fallback) == \
        "no claim; add it to submission.json"
    assert with_flags(note, note.params, flag_table([_with_claim]), fallback=note.fallback) == \
        "no claim; add it to submission.json or pass --claim"
    # the fallback's own parameters are still written as flags
    two = Note("pass `bpb_per_nat` or `force=True`", param=("bpb_per_nat", "force"),
               fallback="use `force=True`")
    assert with_flags(two, two.params, table, fallback=two.fallback) == "use --force"
    assert Note("x", fallback="y").fallback == "y" and GolfError("z").fallback is None
    # an error raised with a Note as its message carries the Note's params and fallback
    e = GolfError(note)
    assert (e.params, e.fallback) == (("claim",), "no claim; add it to submission.json")
    e = GolfError(note, param="force", fallback="other")
    assert (e.params, e.fallback) == (("force",), "other")


@click.command()
@click.option("--claim", type=float)
def _with_claim(**kw):
    raise GolfError("no claim; pass `claim`", param="claim", fallback="no claim")


@click.command()
def _without_claim(**kw):
    raise GolfError("no claim; pass `claim`", param="claim", fallback="no claim at all")


def test_the_group_prints_the_fallback_of_an_error_the_command_cannot_act_on():
    @click.group(cls=LazyGroup)
    def main():
        pass

    main.add_command(_with_claim, "with")
    main.add_command(_without_claim, "without")
    assert CliRunner().invoke(main, ["with"]).output == "error: no claim; pass --claim\n"
    assert CliRunner().invoke(main, ["without"]).output == "error: no claim at all\n"
