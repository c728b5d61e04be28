"""Stage `compare`: TiS against think-first, side by side, from both `evaluate` runs.

Reads ``reports/evaluate/<format>/metrics.json`` and ``predictions.jsonl`` for every format in
params.yaml's ``formats`` and writes ``reports/compare/``:

    table.md / table.json  per split and format: accuracy (of the main input, and with the spoken question
                           and with its transcript), spoken words, response and reasoning tokens,
                           thinker positions and seconds to the first spoken token and the first audio,
                           audio gaps, decode tokens/s (table.json: {"columns": [...], "rows": [[...]]})
    heard.json             per split and format, the spoken answers: ASR word recall of the TTS reference,
                           the codec resynthesis and the talker, heard accuracy, audio length and level
    sweep.json             the TiS model at each speak:think ratio, think-first on the same questions
                           for reference (same shape; table.md shows it below the main table)
    accuracy_vs_words.png  splits.png  latency.png  sweep.png

    python -m tasks.compare
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from models.format import format_info
from tasks.core.params import ROOT, Params
from tasks.core.stage import StageResult, stage_main

STAGE = "compare"
PARAMS = ["formats", "evaluate", "schedule"]  # exactly the params of this stage in dvc.yaml
EVALUATE = ROOT / "reports" / "evaluate"
OUT = ROOT / "reports" / STAGE
LABELS = {"tis": "TiS", "think_first": "think-first"}

# (column, metric key, how to print it)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("questions", "n", "{:.0f}"),
    ("accuracy %", "accuracy", "pct"),
    ("audio input accuracy %", "audio_accuracy", "pct"),
    ("text input accuracy %", "text_accuracy", "pct"),
    ("spoken questions heard %", "heard_numbers", "pct"),
    ("spoken words", "spoken_words", "{:.1f}"),
    ("response tokens", "response_tokens", "{:.1f}"),
    ("reasoning tokens", "reasoning_tokens", "{:.1f}"),
    ("positions to first spoken token", "positions_to_first_text", "{:.1f}"),
    ("s to first spoken token", "seconds_to_first_text", "{:.3f}"),
    ("positions to first audio", "positions_to_first_audio", "{:.1f}"),
    ("s to first audio", "seconds_to_first_audio", "{:.3f}"),
    ("audio gaps", "audio_gaps", "{:.2f}"),
    ("tokens/s", "tokens_per_s", "{:.0f}"),
)
SWEEP_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("questions", "n", "{:.0f}"),
    ("accuracy %", "accuracy", "pct"),
    ("spoken words", "spoken_words", "{:.1f}"),
    ("reasoning tokens", "reasoning_tokens", "{:.1f}"),
    ("thinker positions", "thinker_positions", "{:.1f}"),
    ("positions to first spoken token", "positions_to_first_text", "{:.1f}"),
    ("positions to first audio", "positions_to_first_audio", "{:.1f}"),
    ("s to first audio", "seconds_to_first_audio", "{:.3f}"),
    ("ended (eos) %", "eos_rate", "pct"),
)

# What a listener hears (tasks/evaluate/intelligibility.py): the spoken answers of each split only.
HEARD_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("spoken answers", "heard_n", "{:.0f}"),
    ("ASR recall: TTS reference", "recall_reference", "{:.2f}"),
    ("codec resynthesis", "recall_resynthesis", "{:.2f}"),
    ("talker", "recall_talker", "{:.2f}"),
    ("talker vs another answer (chance)", "recall_talker_chance", "{:.2f}"),
    ("heard accuracy %", "heard_accuracy", "pct"),
    ("written accuracy % (same answers)", "heard_written_accuracy", "pct"),
    ("audio / reference length", "audio_length_ratio", "{:.2f}"),
    ("talker level dBFS", "talker_dbfs", "{:.1f}"),
    ("audio capped %", "audio_capped", "pct"),
)


def _cell(v: Any, how: str) -> Any:
    """The JSON value: a number rounded as printed (None when absent)."""
    if v is None:
        return None
    return round(100 * v, 1) if how == "pct" else round(float(v), 3)


def _text(v: Any, how: str) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if how == "pct" else how.format(v)


def load_reports(formats: Sequence[str], reports: Path = EVALUATE) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """``({format: metrics}, {format: prediction rows})`` from the evaluate stage's outputs."""
    metrics, rows = {}, {}
    for fmt in formats:
        d = Path(reports) / fmt
        if not (d / "metrics.json").exists():
            raise FileNotFoundError(f"{d / 'metrics.json'} not found; run `python -m tasks.evaluate --format {fmt}` "
                                    f"(or `dvc repro evaluate@{fmt}`) first")
        metrics[fmt] = json.loads((d / "metrics.json").read_text())
        pred = d / "predictions.jsonl"
        rows[fmt] = [json.loads(line) for line in pred.read_text().splitlines() if line.strip()] if pred.exists() else []
    return metrics, rows


def table(metrics: dict[str, dict], splits: Sequence[str],
          columns_spec: Sequence[tuple[str, str, str]] = COLUMNS) -> dict[str, list]:
    """``{"columns": [...], "rows": [[split, format, ...], ...]}`` per split (then overall) and format."""
    columns = ["split", "format"] + [c for c, _, _ in columns_spec]
    first = columns_spec[0][1]  # a split/format without this metric has no row
    rows = []
    for split in list(splits) + ["overall"]:
        for fmt, m in metrics.items():
            if f"{split}/{first}" not in m:
                continue
            rows.append([split, LABELS.get(fmt, fmt)] + [_cell(m.get(f"{split}/{k}"), how) for _, k, how in columns_spec])
    return {"columns": columns, "rows": rows}


def sweep_rows(metrics: dict[str, dict]) -> dict[str, list]:
    """The sweep as a table: a row per TiS ratio, then each model without a ratio (overall)."""
    from tasks.evaluate.summary import sweep_table

    columns = ["model", "speak:think"] + [c for c, _, _ in SWEEP_COLUMNS]
    rows = []
    for ratio, m in sweep_table(metrics.get("tis", {})).items():
        rows.append(["TiS", ratio] + [_cell(m.get(k), how) for _, k, how in SWEEP_COLUMNS])
    if rows:
        for fmt, m in metrics.items():
            if not format_info(fmt).ratio:
                rows.append([LABELS.get(fmt, fmt), "–"] + [_cell(m.get(f"sweep_questions/{k}"), how)
                                                          for _, k, how in SWEEP_COLUMNS])
    return {"columns": columns, "rows": rows}


def markdown(t: dict[str, list], hows: Sequence[str]) -> str:
    """A markdown table of ``t``; ``hows`` says how each numeric column prints (after the text ones)."""
    lead = len(t["columns"]) - len(hows)
    lines = ["| " + " | ".join(t["columns"]) + " |", "|" + "---|" * lead + "---:|" * len(hows)]
    for r in t["rows"]:
        cells = [str(x) for x in r[:lead]]
        for v, how in zip(r[lead:], hows):
            cells.append("–" if v is None else (f"{v:.1f}" if how == "pct" else how.format(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _threads(metrics: dict) -> str:
    """What the table says of the threads the seconds were timed on: ", N torch thread(s) for each format" where
    every format's evaluation says the same N, each format's count where they differ, nothing where none says."""
    n = {m.get("evaluate/threads") for m in metrics.values()}
    if len(n) == 1 and None not in n:
        return f", {n.pop()} torch thread(s) for each format"
    return "" if n <= {None} else ", torch threads " + ", ".join(f"{f} {m.get('evaluate/threads', '?')}" for f, m in metrics.items())


def run(p: Params, reports: Path = EVALUATE, out_dir: Path = OUT) -> StageResult:
    from models.atomic import write_json, write_text
    import tasks.evaluate.plots as plots
    from tasks.evaluate.summary import sweep_table

    out_dir = Path(out_dir)
    metrics, rows = load_reports(p.formats, reports)
    splits = [s for s in p.evaluate.splits if any(f"{s}/n" in m for m in metrics.values())]
    main = table(metrics, splits)
    sw = sweep_rows(metrics)
    trained = [f"{s}:{t}" for s, t in p.schedule.mix] or [f"{p.schedule.speak}:{p.schedule.think}"]
    md = (f"### Spoken-MQA ({p.evaluate.benchmark}): TiS against think-first\n\n"
          + markdown(main, [h for _, _, h in COLUMNS])
          + "\nAccuracy as AudioBench scores it; positions count thinker positions (control tokens included) "
            "from the first generated one; seconds are wall time on this machine"
          + _threads(metrics) + ".\n")
    heard = table(metrics, splits, HEARD_COLUMNS)
    if heard["rows"]:
        md += ("\n### Heard: what an offline ASR hears of the spoken answers\n\n"
               + markdown(heard, [h for _, _, h in HEARD_COLUMNS])
               + "\nWord recall of pocketsphinx (LM of the training responses) against the response's words; heard "
                 "accuracy scores the talker transcript with its spoken numbers turned into digits (text2num), as "
                 "AudioBench scores the written answer; audio capped: a length cap, not the end of speech, ended it.\n")
    if sw["rows"]:
        md += (f"\n### speak:think sweep (TiS trained at {', '.join(trained)}; the first "
               f"{p.evaluate.sweep_per_split} questions of each split)\n\n" + markdown(sw, [h for _, _, h in SWEEP_COLUMNS]))
    files = [write_text(out_dir / "table.md", md), write_json(out_dir / "table.json", main),
             write_json(out_dir / "sweep.json", sw), write_json(out_dir / "heard.json", heard)]
    pngs = [plots.accuracy_vs_words(metrics, splits, out_dir / "accuracy_vs_words.png"),
            plots.split_bars(metrics, splits, out_dir / "splits.png", "Spoken-MQA per split: TiS against think-first"),
            plots.latency(rows, out_dir / "latency.png", "Latency per answer: TiS against think-first"),
            plots.sweep(sweep_table(metrics.get("tis", {})), {f: m for f, m in metrics.items() if not format_info(f).ratio},
                        out_dir / "sweep.png", trained)]
    flat: dict[str, Any] = {}
    for fmt, m in metrics.items():
        for k in ("accuracy", "audio_accuracy", "text_accuracy", "heard_numbers", "spoken_words", "positions_to_first_text",
                  "seconds_to_first_audio", "heard_accuracy", "recall_reference", "recall_resynthesis", "recall_talker",
                  "audio_length_ratio", "audio_capped"):
            if f"overall/{k}" in m:
                flat[f"{fmt}/{k}"] = m[f"overall/{k}"]
    if "tis" in metrics and "think_first" in metrics:
        a, b = metrics["tis"], metrics["think_first"]
        if a.get("overall/spoken_words") and b.get("overall/spoken_words"):
            flat["tis_vs_think_first/spoken_words_ratio"] = round(a["overall/spoken_words"] / b["overall/spoken_words"], 4)
        if "overall/accuracy" in a and "overall/accuracy" in b:
            flat["tis_vs_think_first/accuracy_difference"] = round(a["overall/accuracy"] - b["overall/accuracy"], 4)
    print(md, flush=True)
    return StageResult(flat, f"{len(main['rows'])} rows; {out_dir / 'table.md'}",
                       artifacts=[(f, None) for f in files] + [(f, "plots") for f in pngs],
                       tables={"compare.json": [dict(zip(main["columns"], r)) for r in main["rows"]]})


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, PARAMS, lambda p, fmt, tracker: run(p), argv, context="evaluation",
               description="Put TiS and think-first side by side from both evaluate runs; writes reports/compare/.")


if __name__ == "__main__":
    main()
