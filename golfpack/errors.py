"""Errors that the CLIs turn into one clear line and an exit code (never a traceback)."""


class GolfError(Exception):
    """Base of every expected failure. `exit_code` follows the CLI convention:
    1 = a check failed (over budget, not significant, audit FAIL), 2 = usage or input error."""

    exit_code = 2


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
