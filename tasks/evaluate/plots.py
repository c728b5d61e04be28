"""The evaluation's PNG plots (matplotlib, headless), for one format (``evaluate``) or side by side
(``compare``). Each takes ``{format: metrics}`` or ``{format: prediction rows}`` and a path, writes
atomically and returns the path.

- ``split_bars``: accuracy and spoken words per split, a bar per format;
- ``accuracy_vs_words``: accuracy against spoken words per answer, a point per split and format;
- ``latency``: distributions of thinker positions and seconds to the first spoken token and the first
  audio chunk, per format;
- ``sweep``: accuracy, spoken words and first-audio latency against the TiS speak:think ratio, with
  the think-first model (which has no ratio) as a dashed reference line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

COLORS = {"tis": "tab:blue", "think_first": "tab:orange"}
LABELS = {"tis": "TiS", "think_first": "think-first"}
SHORT = {"short_digit": "short digit", "long_digit": "long digit", "single_step_reasoning": "single step",
         "multi_step_reasoning": "multi step"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from models.atomic import write_with

    fig.tight_layout()
    write_with(path, lambda t: fig.savefig(t, format="png"))
    _plt().close(fig)
    return Path(path)


def _label(fmt: str) -> str:
    return LABELS.get(fmt, fmt)


def split_bars(metrics: dict[str, dict[str, Any]], splits: Sequence[str], path: Path, title: str = "") -> Path:
    plt = _plt()
    names = list(splits) + ["overall"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    width = 0.8 / max(1, len(metrics))
    for k, (fmt, m) in enumerate(metrics.items()):
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(names))]
        acc = [100 * (m.get(f"{s}/accuracy") or 0.0) for s in names]
        words = [m.get(f"{s}/spoken_words") or 0.0 for s in names]
        for ax, ys, fmt_s in ((axes[0], acc, "{:.0f}"), (axes[1], words, "{:.0f}")):
            bars = ax.bar(xs, ys, width, color=COLORS.get(fmt), label=_label(fmt))
            ax.bar_label(bars, [fmt_s.format(y) for y in ys], fontsize=7)
    for ax, ylabel in ((axes[0], "accuracy (%)"), (axes[1], "spoken words per answer")):
        ax.set_xticks(range(len(names)), [SHORT.get(s, s) for s in names], rotation=20, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(0, 105)
    fig.suptitle(title or "Spoken-MQA per split", fontsize=10)
    return _save(fig, path)


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def accuracy_vs_words(metrics: dict[str, dict[str, Any]], splits: Sequence[str], path: Path) -> Path:
    """Colour: the format; marker: the split (a star for overall)."""
    from matplotlib.lines import Line2D

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
    names = list(splits) + ["overall"]
    markers = {s: ("*" if s == "overall" else MARKERS[i % len(MARKERS)]) for i, s in enumerate(names)}
    for fmt, m in metrics.items():
        for s in names:
            x, y = m.get(f"{s}/spoken_words"), m.get(f"{s}/accuracy")
            if x is not None and y is not None:
                ax.scatter([x], [100 * y], color=COLORS.get(fmt, "tab:gray"), marker=markers[s],
                           s=110 if s == "overall" else 40, alpha=0.8)
    handles = [Line2D([], [], color=COLORS.get(f, "tab:gray"), marker="o", ls="", label=_label(f)) for f in metrics]
    handles += [Line2D([], [], color="black", marker=markers[s], ls="", label=SHORT.get(s, s)) for s in names]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xlabel("spoken words per answer")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title("Accuracy against spoken words (per split)", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


LATENCY = (("positions_to_first_text", "thinker positions to first spoken token"),
           ("seconds_to_first_text", "seconds to first spoken token"),
           ("positions_to_first_audio", "thinker positions to first audio"),
           ("seconds_to_first_audio", "seconds to first audio"))


def latency(rows: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Box plots (with the points) of each latency over the main (not sweep) answers, per format."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(LATENCY), figsize=(12, 3.4), dpi=110)
    fmts = list(rows)
    for ax, (key, label) in zip(axes, LATENCY):
        data = [[r["timings"][key] for r in rows[f] if not r["sweep"] and r["timings"].get(key) is not None]
                for f in fmts]
        shown = [(f, d) for f, d in zip(fmts, data) if d]
        if shown:
            bp = ax.boxplot([d for _, d in shown], patch_artist=True, widths=0.5, showfliers=False)
            ax.set_xticks(range(1, len(shown) + 1), [_label(f) for f, _ in shown], fontsize=8)
            for patch, (f, _) in zip(bp["boxes"], shown):
                patch.set_facecolor(COLORS.get(f, "tab:gray"))
                patch.set_alpha(0.4)
            for i, (f, d) in enumerate(shown, 1):
                ax.scatter([i] * len(d), d, s=6, color=COLORS.get(f, "tab:gray"), alpha=0.6, zorder=3)
        else:
            ax.text(0.5, 0.5, "no spoken answers", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.set_xticks([])
        ax.set_title(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or "Latency per answer", fontsize=10)
    return _save(fig, path)


SWEEP_PANELS = (("accuracy", "accuracy (%)", 100.0), ("spoken_words", "spoken words per answer", 1.0),
                ("seconds_to_first_audio", "seconds to first audio", 1.0),
                ("positions_to_first_audio", "thinker positions to first audio", 1.0))


def sweep(tis: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]], path: Path,
          trained: Sequence[str] = ("2:8",)) -> Path:
    """``tis``: ``{"1:9": metrics, ...}`` (``summary.sweep_table``); ``reference``: ``{format: metrics}``
    of models without a ratio (``sweep_questions/<metric>``: the same questions), drawn as horizontal
    lines; ``trained``:
    the ratios the TiS model was trained at (starred)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(SWEEP_PANELS), figsize=(13, 3.4), dpi=110)
    ratios = list(tis)
    for ax, (key, label, scale) in zip(axes, SWEEP_PANELS):
        pts = [(i, tis[r][key] * scale) for i, r in enumerate(ratios) if tis[r].get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=COLORS["tis"], label="TiS")
        for fmt, m in reference.items():
            v = m.get(f"sweep_questions/{key}")
            if v is not None:
                ax.axhline(v * scale, ls="--", lw=1, color=COLORS.get(fmt, "tab:gray"), label=_label(fmt))
        ax.set_xticks(range(len(ratios)), [f"{r}{' *' if r in trained else ''}" for r in ratios])
        ax.set_xlabel("speak:think (* trained)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        if key == "accuracy":
            ax.set_ylim(-3, 103)
    axes[0].legend(fontsize=7)
    fig.suptitle("speak:think sweep (TiS decoded at each ratio; think-first for reference)", fontsize=10)
    return _save(fig, path)
