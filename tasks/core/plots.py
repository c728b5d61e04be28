"""PNG plots logged to MLflow next to the numbers (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def loss_curve(history: Sequence[tuple[int, float]], path: Path, title: str, val_loss: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    if history:
        steps, losses = zip(*history)
        ax.plot(steps, losses, lw=1.2, label="train/loss")
    if val_loss is not None and history:
        ax.axhline(val_loss, color="tab:orange", ls="--", lw=1, label=f"val/loss {val_loss:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (per target token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def probe_curve(probes: Sequence[tuple[int, dict]], path: Path, title: str) -> Path:
    """Held-out probe accuracy per step: overall and per problem kind (tasks/core/probe.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    keys = sorted({k for _, m in probes for k in m})
    for k in keys:
        pts = [(s, 100 * m[k]) for s, m in probes if k in m]
        overall = k == "probe/accuracy"
        ax.plot(*zip(*pts), marker="o", ms=3, lw=2.0 if overall else 1.0, color="black" if overall else None,
                label=k.split("/", 1)[1])
    ax.set_xlabel("step")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
