"""PNG plots of score, threshold and alerts per compressor, with labelled faults shaded."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_scores(scored: pd.DataFrame, events: pd.DataFrame, path: Path, title: str = "") -> Path:
    """One panel per compressor.

    scored: compressor_id, window_end, score, threshold, triggered
    events: compressor_id, start, end (labelled faults; may be empty)
    """
    compressors = sorted(scored["compressor_id"].unique())
    fig, axes = plt.subplots(len(compressors), 1, figsize=(14, 2.6 * len(compressors)), sharex=True, squeeze=False)
    for ax, cid in zip(axes[:, 0], compressors):
        part = scored[scored["compressor_id"] == cid].sort_values("window_end")
        ax.plot(part["window_end"], part["score"], lw=0.6, color="tab:blue", label="score")
        ax.plot(part["window_end"], part["threshold"], lw=1.0, color="tab:orange", ls="--", label="threshold")
        alerts = part[part["triggered"].astype(bool)]
        ax.scatter(alerts["window_end"], alerts["score"], color="red", marker="v", s=30, zorder=3, label="alert")
        for _, event in events[events["compressor_id"] == cid].iterrows():
            ax.axvspan(event["start"], event["end"], color="red", alpha=0.12, lw=0)
        ax.set_yscale("log")
        ax.set_ylabel(cid)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", ncol=3, fontsize=8)
    axes[0, 0].set_title(title or "Anomaly score vs threshold (labelled faults shaded)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
