"""Shared plumbing for the three click CLIs: lazily loaded subcommands (so `golfeval logs`
never pays for importing torch) and one-line errors with the project's exit codes."""

from __future__ import annotations

import importlib
import json
import os
import sys

import click

from golfpack.errors import GolfError


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

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GolfError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (OSError, ValueError) as exc:
            # Unexpected-but-input-shaped failures still get one line, not a traceback.
            if os.environ.get("GOLF_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


def emit_json(obj) -> None:
    """Print a JSON document (the `--json` output of every command that reports numbers)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))


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
