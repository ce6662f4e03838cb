"""Small matplotlib helpers shared by golfeval commands. matplotlib is imported only when a
plot is drawn (it is an optional dependency), through the object API (no pyplot state)."""

from __future__ import annotations

import io

from golfpack.errors import GolfError
from golfpack.fileio import atomic_write_bytes


def new_figure(width: float = 6.4, height: float = 4.2):
    """A (figure, axes) pair that renders off-screen."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise GolfError("plotting needs matplotlib: pip install 'golf[plot]'") from exc
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_png(fig, path, force: bool = False) -> None:
    """Render to PNG in memory, then write atomically (refusing to clobber without force)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue(), force=force)


def strip_chart(path, series, *, title: str, ylabel: str, xlabel: str = "",
                references=(), force: bool = False) -> None:
    """One column of points per series (name, values) with its mean drawn as a bar;
    `references` are (label, y) horizontal lines across the chart."""
    fig, ax = new_figure()
    for i, (name, values) in enumerate(series):
        values = list(values)
        k = len(values)
        xs = [i + (j - (k - 1) / 2) * min(0.08, 0.5 / max(k, 1)) for j in range(k)]
        ax.scatter(xs, values, s=28, zorder=3, label=f"{name} (n={k})")
        if values:
            mean = sum(values) / k
            ax.hlines(mean, i - 0.3, i + 0.3, colors="black", linewidth=2, zorder=4)
            ax.annotate(f"mean {mean:.5f}", (i + 0.32, mean), va="center", fontsize=8)
    for j, (label, y) in enumerate(references):
        ax.axhline(y, linestyle="--", linewidth=1, color=f"C{len(series) + j}", label=label)
    ax.set_xticks(range(len(series)), [name for name, _ in series])
    ax.set_xlim(-0.6, len(series) - 0.1)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_png(fig, path, force=force)
