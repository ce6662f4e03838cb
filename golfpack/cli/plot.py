"""`golfpack inspect --plot`: where the bytes go, against the cap (matplotlib, lazily)."""

from __future__ import annotations

from golfpack.quant.scheme import family


def plot_report(report: dict, path, force: bool = False) -> None:
    """Two panels: a stacked bar of bytes by tensor family (+ header + code) up to the
    budget line, and bits per parameter for every tensor."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from golfpack.errors import GolfError

        raise GolfError("--plot needs matplotlib (pip install 'golf[plot]')") from None
    fams: dict[str, int] = {}
    for t in report["tensors"]:
        fams[family(t["name"])] = fams.get(family(t["name"]), 0) + t["bytes"]
    parts = sorted(fams.items(), key=lambda kv: -kv[1])
    parts = [("header", report["header_bytes"])] + parts + [("code", report["code_bytes"])]
    budget = report["budget"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1, 3]})
    bottom = 0.0
    cmap = plt.get_cmap("tab20")
    for i, (name, nbytes) in enumerate(parts):
        ax1.bar(0, nbytes / 1e6, bottom=bottom / 1e6, color=cmap(i % 20), label=name, width=0.6)
        bottom += nbytes
    ax1.axhline(budget / 1e6, color="red", linestyle="--", linewidth=1.5,
                label=f"cap {budget:,} B")
    ax1.set_xticks([])
    ax1.set_ylabel("bytes (MB, decimal)")
    ax1.set_ylim(0, max(budget, bottom) * 1.08 / 1e6)
    ax1.set_title(f"total {report['total_bytes']:,} B\nheadroom {report['headroom']:,} B",
                  fontsize=10)
    ax1.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    tensors = report["tensors"]
    names = [family(t["name"]) for t in tensors]
    colour = {f: cmap((i + 1) % 20) for i, (f, _) in enumerate(parts[1:-1])}
    ax2.bar(range(len(tensors)), [t["bits_per_param"] for t in tensors],
            color=[colour.get(n, "grey") for n in names])
    ax2.set_xlabel("tensor (artifact order)")
    ax2.set_ylabel("stored bits per parameter")
    ax2.set_title("bits per parameter by tensor (colour = family)", fontsize=10)
    fig.suptitle(f"artifact bytes: model {report['model_bytes']:,} + code "
                 f"{report['code_bytes']:,} vs cap {budget:,}")
    fig.tight_layout()
    import io

    from golfpack.fileio import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue(), force=force)
