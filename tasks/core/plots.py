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
