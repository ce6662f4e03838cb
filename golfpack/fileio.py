"""The one place outputs are written: atomically (temp file + fsync + rename), never over an
input, and never over an existing file unless the caller says `force`."""

from __future__ import annotations

import os
from contextlib import contextmanager

from golfpack.errors import GolfError, OutputError


def refuse_existing(path, force: bool) -> None:
    """An existing output is kept unless the user asked to overwrite it."""
    if os.path.exists(path) and not force:
        raise GolfError(f"{os.fspath(path)} exists; pass `force=True` to overwrite it",
                        param="force")


def refuse_same_file(inp, out) -> None:
    """Never overwrite an input: refuse when the output path is the input path."""
    if inp is not None and os.path.exists(inp) and os.path.exists(out) \
            and os.path.samefile(inp, out):
        raise GolfError(f"refusing to overwrite the input {os.fspath(inp)}")


@contextmanager
def atomic_path(path, force: bool = False):
    """Yield a temp path beside `path`; on success it is fsynced and renamed onto `path`
    (and the directory fsynced), on failure removed, so `path` is never half written."""
    path = os.fspath(path)
    refuse_existing(path, force)
    directory = os.path.dirname(os.path.abspath(path))
    with _as_output_error(path):
        os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        yield tmp
        with _as_output_error(path):
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        _fsync_dir(directory)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path, data: bytes, force: bool = False) -> None:
    """Write `data` to `path` atomically; refuse to clobber an existing file without force."""
    with atomic_path(path, force) as tmp, _as_output_error(path), open(tmp, "wb") as fh:
        fh.write(data)


@contextmanager
def _as_output_error(path: str):
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
