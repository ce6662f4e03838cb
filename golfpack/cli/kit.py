"""Shared plumbing for the three click CLIs: lazily loaded subcommands (so `golfeval logs`
never pays for importing torch), per-process thread defaults, one-line errors with the
project's exit codes for its declared errors (GolfError), strict JSON, and option types that
refuse what would otherwise fall back silently (NaN claims, empty specs)."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from typing import NamedTuple

import click

from golfpack.errors import GolfError, NonFiniteError, Note
from golfpack.threads import apply_thread_defaults


class LazyGroup(click.Group):
    """A click group whose subcommands live in other modules and load on first use.

    `lazy` maps a command name to "module:attribute" of a click command.
    """

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx, args):
        # remember the command that runs (meta is shared by nested contexts), so an error
        # raised inside it can be told with that command's flags
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:
            ctx.meta.setdefault(_INVOKED, []).append(cmd)
        return name, cmd, rest

    def invoke(self, ctx):
        # before any subcommand module (and so torch) is imported: OMP reads its env once
        if ctx.parent is None:
            apply_thread_defaults()
        try:
            return super().invoke(ctx)
        except GolfError as exc:
            # Only the project's declared errors become one line; anything else is a bug
            # and keeps its traceback.
            if os.environ.get("GOLF_DEBUG"):
                raise
            commands = [ctx.command, *ctx.meta.get(_INVOKED, [])]
            text = with_flags(str(exc), exc.params, flag_table(commands),
                              fallback=getattr(exc, "fallback", None))
            click.echo(f"error: {text}", err=True)
            sys.exit(exc.exit_code)


_INVOKED = "golf.invoked_commands"


class Flag(NamedTuple):
    """How one parameter is written on a command line: `plain` (`--max-tokens`), and for
    on/off options the flag that sets True and the one that sets False (None: no such
    flag)."""

    plain: str
    true: str | None = None
    false: str | None = None


def flag_table(commands) -> dict[str, Flag]:
    """Parameter name -> Flag, read off the click commands' own options. A parameter is
    found by the option's Python name (`config_path`) or by its flag's words (`--config`
    -> `config`), so a library keyword that differs from the CLI's variable still maps."""
    by_name, by_words = {}, {}
    for cmd in commands:
        for opt in getattr(cmd, "params", ()):
            if not isinstance(opt, click.Option) or not opt.opts:
                continue
            flag = _flag_of(opt)
            by_name[opt.name] = flag
            if opt.is_bool_flag and opt.name.startswith("no_") and flag.true:
                # `--no-decoder` (no_decoder) is how the CLI writes decoder=False
                by_words.setdefault(opt.name[3:], Flag(flag.plain, false=flag.plain))
            for text in opt.opts:
                if text.startswith("--"):
                    by_words.setdefault(text[2:].replace("-", "_"), flag)
            for text in opt.secondary_opts:
                if text.startswith("--"):
                    by_words.setdefault(text[2:].replace("-", "_"),
                                        Flag(text, true=None, false=text))
    return {**by_words, **by_name}


def _flag_of(opt: click.Option) -> Flag:
    longs = [o for o in opt.opts if o.startswith("--")] or list(opt.opts)
    plain = longs[0]
    if not opt.is_bool_flag:
        return Flag(plain)
    if opt.secondary_opts:
        return Flag(plain, true=plain, false=opt.secondary_opts[0])
    return Flag(plain, true=plain) if opt.flag_value else Flag(plain, false=plain)


def with_flags(text: str, params, table: dict[str, Flag], fallback: str | None = None) -> str:
    """`text` (a library message naming `params` in backticks) with each one written as its
    flag: `max_tokens` -> --max-tokens, `force=True` -> --force, `decoder=False` ->
    --no-decoder, `sensitivity=tensor` -> --sensitivity tensor. Where the command has no
    option for one of them, the message's `fallback` (advice without that parameter) is
    written instead; without one, such a parameter keeps its library spelling."""
    if fallback is not None and any(name not in table for name in params):
        text = fallback
    for name in params:
        flag = table.get(name)
        if flag is None:
            continue

        def written(m, flag=flag):
            value = m.group(1)
            if value is None:
                return flag.plain
            if value in ("True", "False") and getattr(flag, value.lower()):
                return getattr(flag, value.lower())
            return f"{flag.plain} {value}"

        text = re.sub(rf"`{re.escape(name)}(?:=([^`]*))?`", written, text)
    return text


def cli_text(text: str) -> str:
    """A library line (a Note naming parameters, or plain text) as the running command
    writes it: its parameters as this command's flags."""
    params = getattr(text, "params", ())
    ctx = click.get_current_context(silent=True)
    if not params or ctx is None:
        return str(text)
    commands, c = [], ctx
    while c is not None:
        commands.insert(0, c.command)
        c = c.parent
    return with_flags(str(text), params, flag_table(commands),
                      fallback=getattr(text, "fallback", None))


def emit_json(obj, non_finite: str = "error") -> None:
    """Print a strict JSON document (the `--json` output of every command that reports
    numbers). NaN and infinity are not JSON. A computed result holding one is an error
    naming the key (`non_finite="error"`), never a document other parsers reject; numbers
    read from other people's files (a record log saying `val_bpb:nan`) are printed as null
    (`non_finite="null"`)."""
    if non_finite == "null":
        obj = _nulled(obj)
    obj = _notes_as_flags(obj)
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default,
                          allow_nan=False)
    except ValueError:
        where = first_non_finite(obj)
        raise NonFiniteError(f"the result is not finite: {where or 'a value'} is "
                             "NaN or infinite") from None
    click.echo(text)


def _notes_as_flags(obj):
    """`obj` with every library Note (a line naming parameters) written with the running
    command's flags."""
    if isinstance(obj, Note):
        return cli_text(obj)
    if isinstance(obj, dict):
        return {k: _notes_as_flags(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_notes_as_flags(v) for v in obj]
    return obj


def _nulled(obj):
    """`obj` with every NaN/inf float (numpy ones included) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _nulled(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nulled(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.floating | np.ndarray):
            return _nulled(_json_default(obj))
    except ImportError:  # pragma: no cover
        pass
    return obj


def first_non_finite(obj, path: str = "") -> str | None:
    """The JSON path (e.g. `runs[2].val_bpb`) of the first NaN/inf float in `obj`, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (path or "the value")
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = first_non_finite(v, f"{path}.{k}" if path else str(k))
            if hit:
                return hit
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            hit = first_non_finite(v, f"{path}[{i}]")
            if hit:
                return hit
    else:
        try:
            import numpy as np

            if isinstance(obj, np.floating | np.ndarray):
                return first_non_finite(_json_default(obj), path)
        except ImportError:  # pragma: no cover
            pass
    return None


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class FiniteFloat(click.ParamType):
    """A float option that refuses nan and inf (click.FLOAT accepts both), optionally
    within bounds (`open_low` / `open_high` exclude the bound itself)."""

    name = "float"

    def __init__(self, low: float | None = None, high: float | None = None,
                 open_low: bool = False, open_high: bool = False):
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high

    def convert(self, value, param, ctx):
        try:
            f = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(f):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        lo, hi = self.low, self.high
        if lo is not None and (f < lo or (self.open_low and f == lo)):
            self.fail(f"{value!r} must be {'>' if self.open_low else '>='} {lo:g}", param, ctx)
        if hi is not None and (f > hi or (self.open_high and f == hi)):
            self.fail(f"{value!r} must be {'<' if self.open_high else '<='} {hi:g}", param, ctx)
        return f


FINITE_FLOAT = FiniteFloat()
NON_NEGATIVE_FLOAT = FiniteFloat(low=0.0)
POSITIVE_FLOAT = FiniteFloat(low=0.0, open_low=True)
PROBABILITY = FiniteFloat(low=0.0, high=1.0, open_low=True, open_high=True)
POSITIVE_INT = click.IntRange(min=1)


class NonEmptySpec(click.ParamType):
    """A string option that must say something: '' or only separators (e.g. ';;;') would
    otherwise fall back to the default without a word."""

    name = "text"

    def __init__(self, separators: str = ";"):
        self.separators = separators

    def convert(self, value, param, ctx):
        text = str(value)
        if not text.strip(self.separators + " \t\n"):
            self.fail(f"{text!r} is empty; omit the option to get the default", param, ctx)
        return text
