"""Plots of simulation results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def attainment_plot(doc: dict[str, Any], path: Path) -> None:
    """Grouped bars: SLO attainment per class and overall, one group per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["results"]
    classes = sorted({c for r in rows for c in r["slo_attainment_by_class"]})
    cols = [*classes, "overall"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(rows), 3.6))
    width = 0.8 / len(cols)
    for k, c in enumerate(cols):
        vals = [
            100 * (r["slo_attainment"] if c == "overall" else r["slo_attainment_by_class"].get(c, 0.0))
            for r in rows
        ]
        xs = [i + (k - (len(cols) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, vals, width, label=c)
    ax.set_xticks(range(len(rows)), [r["policy"] for r in rows])
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{doc['scenario']} (seed {doc['seed']}, load {doc['load']:g})")
    ax.legend(fontsize=8, ncols=min(4, len(cols)), loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
