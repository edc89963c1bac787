"""The plot of recipe=latency: measured latency against parameters, coloured by FLOPs, with the rank
correlations in the title (AutoDistill §3.4, Table 2: proxies mislead).

Draws on a ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no global backend switch.
"""

from __future__ import annotations

from pathlib import Path

from reports.sweep_table import save_figure


def plot_latency_vs_params(rows: list[dict], correlations: dict[str, float], device: str, path: Path) -> None:
    """Write the scatter plot to the PNG ``path``.

    Args:
        rows: one per measured student, with ``params``, ``flops`` and ``p50_ms``.
        correlations: recipe=latency's rank correlations (``spearman/params_vs_latency`` ... when >= 3 rows).
        device: what the latency was measured on, for the title.
        path: the PNG to write (atomically).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    points = ax.scatter(
        [r["params"] / 1e6 for r in rows],
        [r["p50_ms"] for r in rows],
        c=[r["flops"] / 1e9 for r in rows],
        cmap="viridis",
        s=28,
    )
    fig.colorbar(points, ax=ax, label="GFLOPs / sequence")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("measured p50 latency (ms)")
    title = f"{len(rows)} students on {device}"
    if "spearman/params_vs_latency" in correlations:
        title += (
            f"\nSpearman: params {correlations['spearman/params_vs_latency']:.2f}, "
            f"FLOPs {correlations['spearman/flops_vs_latency']:.2f}"
        )
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
