"""Progress for long library calls. One convention everywhere: a library function takes
`progress: bool` and shows a tqdm bar on stderr (quiet when stderr is not a terminal, so
captured logs hold no carriage-return bars); the per-item hooks inside (quantize one tensor,
encode one stream) are `on_step(name)` callbacks, never a `progress` argument."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

OnStep = Callable[[str], None] | None


@contextmanager
def step_bar(enabled: bool, desc: str, total: int | None = None) -> Iterator[OnStep]:
    """Yield an on_step(name) callback that advances a bar (None when not enabled)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)

    def on_step(name: str) -> None:
        bar.set_postfix_str(name[-40:], refresh=False)
        bar.update(1)

    try:
        yield on_step
    finally:
        bar.close()
