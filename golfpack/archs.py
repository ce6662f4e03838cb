"""Which architectures a file may name on its own: a checkpoint's or artifact's `arch`
("module:factory") is imported only when it is on this allow-list (golf's own models, and
those a program registers). Torch-free, so `inspect` can flag a foreign arch anywhere."""

from __future__ import annotations

from golfpack.errors import CheckpointError

DEFAULT_ARCH = "trainer.model:GPT"
TRUSTED_ARCHS: set[str] = {DEFAULT_ARCH}


class UntrustedArchError(CheckpointError):
    """A file names an architecture that is not on the allow-list."""


def register_arch(spec: str) -> None:
    """Allow files to name `spec` ("module:factory"), e.g. a package's own model."""
    if not isinstance(spec, str) or ":" not in spec:
        raise CheckpointError(f"arch {spec!r} must look like 'module:factory'")
    TRUSTED_ARCHS.add(spec)


def arch_trusted(spec) -> bool:
    """True when a file may name `spec` on its own (see the module docstring)."""
    return isinstance(spec, str) and spec in TRUSTED_ARCHS


def check_file_arch(spec, where: str = "the file") -> str:
    """The arch a file names, or UntrustedArchError (one line naming it)."""
    if not arch_trusted(spec):
        allowed = ", ".join(sorted(TRUSTED_ARCHS))
        raise UntrustedArchError(
            f"{where} names architecture {str(spec)[:120]!r}, which is not on golf's "
            f"allow-list ({allowed}); a file never chooses the code that runs: name the "
            "model yourself, or trust the file explicitly, to use it")
    return spec
