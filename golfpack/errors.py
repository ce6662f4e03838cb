"""Errors that the CLIs turn into one clear line and an exit code (never a traceback)."""


class GolfError(Exception):
    """Base of every expected failure. `exit_code` follows the CLI convention:
    1 = a check failed (over budget, not significant, audit FAIL), 2 = usage or input error.

    The message speaks library terms: a parameter is named by its Python keyword in
    backticks ("`max_tokens` must be at least 2", "pass `force=True` to overwrite it"),
    never by a CLI flag, and `param` lists the keywords it names. A CLI writes those as
    its own flags (golfpack.cli.kit), so the command line reads --max-tokens / --force.
    `fallback` is the message for a command that has no option for one of them (advice
    such a user can follow instead). A message that is a Note brings its own params and
    fallback (unless they are given)."""

    exit_code = 2

    def __init__(self, *args, param: str | tuple[str, ...] | list[str] | None = None,
                 fallback: str | None = None):
        super().__init__(*args)
        note = args[0] if len(args) == 1 and isinstance(args[0], Note) else None
        self.params = _param_names(param) if param is not None or note is None else note.params
        self.fallback = fallback if fallback is not None or note is None else note.fallback


class Note(str):
    """A warning line for the user that names parameters (`params`) of the library call, as
    GolfError messages do; the CLIs print it with their flags in their place, or print
    `fallback` where the command has no option for one of them."""

    params: tuple[str, ...]
    fallback: str | None

    def __new__(cls, text: str, param: str | tuple[str, ...] | list[str] | None = None,
                fallback: str | None = None):
        note = super().__new__(cls, text)
        note.params = _param_names(param)
        note.fallback = fallback
        return note


def _param_names(param) -> tuple[str, ...]:
    if param is None:
        return ()
    return (param,) if isinstance(param, str) else tuple(param)


def read_file(path, what: str, error: type[GolfError] = GolfError) -> bytes:
    """The whole file, or `error` with one line naming `what` and `path` (never a traceback)."""
    import os

    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None


class CheckFailed(GolfError):
    """The inputs were fine but the check they asked for did not pass."""

    exit_code = 1


class ArtifactError(GolfError):
    """A .golf artifact is corrupt, truncated, or not an artifact at all."""


class CheckpointError(GolfError):
    """A checkpoint cannot be read safely (bad file, pickle with code, missing config)."""


class NonFiniteError(GolfError):
    """A computed result (a loss, a bpb, a reported number) is NaN or infinite: a broken
    model or input, never a number to publish. Exit 1: the inputs loaded, the result failed."""

    exit_code = 1


class ModelConfigError(GolfError, ValueError):
    """A model configuration that cannot be built (e.g. heads that do not divide the width).
    Also a ValueError, so library callers that caught ValueError keep working."""


class OutputError(GolfError):
    """An output cannot be written where the user asked (no such directory, no permission,
    disk full): one line naming the path, nothing half written."""
