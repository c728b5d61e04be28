"""Prediction rows -> the ``evaluate`` stage's metrics (flat ``split/metric`` keys, DVC and MLflow).

Per split and ``overall`` (every question of the run; the proxy asks each split equally often):

- ``n``, ``correct``, ``accuracy`` (share of questions AudioBench's rule scores correct, 0..1),
  ``no_answer`` (share whose response holds no number), ``eos_rate`` (share that ended on their own,
  not at max_new_tokens), ``errors``;
- ``spoken_words``, ``response_tokens``, ``reasoning_tokens``, ``thinker_positions`` (means);
- ``positions_to_first_text`` / ``seconds_to_first_text``: thinker positions (controls included) and
  seconds from the session's start to the first spoken (response) token, means over answers that
  spoke; ``speech_during_reasoning``: share of answers with both whose first response token came
  before their last reasoning token (TiS ~1, think-first 0 by construction);
- ``positions_to_first_audio``, ``talker_steps_to_first_audio``, ``seconds_to_first_audio`` (means
  over spoken answers), ``audio_gaps`` (mean per fully spoken answer: playback stalls),
  ``audio_seconds``;
- ``tokens_per_s``: thinker positions per second while the thinker ran (mean over the answers that
  were not spoken, whose pace includes no talker and codec work; over all when every one was);
- ``heard_numbers``: share of the spoken questions whose reasoning starts by writing every number of the
  question, in order, read as digits: the model heard them (its transcript, ``model.transcribe_first``, in
  words or digits, ``model.transcript``; without one, a scratchpad that starts from the question's
  operands). Absent for text input. Where it is low, audio accuracy is lost to hearing, not to reasoning.

The sweep adds ``ratio_<speak>_<think>/<metric>`` for the TiS model at each ratio, on the sweep's
questions only (the schedule's own ratio included, from the same questions' main rows); a model
without a ratio (think-first) reports ``sweep_questions/<metric>`` on the same questions instead.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable, Sequence

MEAN_TIMINGS = ("response_tokens", "reasoning_tokens", "thinker_positions", "positions_to_first_text",
                "seconds_to_first_text", "positions_to_first_audio", "talker_steps_to_first_audio",
                "seconds_to_first_audio", "tokens_per_s")
SWEEP_METRICS = ("accuracy", "spoken_words", "reasoning_tokens", "thinker_positions", "positions_to_first_text",
                 "seconds_to_first_text", "positions_to_first_audio", "seconds_to_first_audio", "eos_rate", "n")


def _mean(xs: Iterable[Any], digits: int = 4) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return round(statistics.fmean(vals), digits) if vals else None


def speech_during_reasoning(row: dict) -> bool | None:
    """Did the first response token come before the last reasoning token? None without both."""
    t = row["timings"]
    first, end = t.get("positions_to_first_text"), t.get("positions_to_reasoning_end")
    if first is None or end is None:
        return None
    return first < end


def heard_numbers(row: dict) -> bool | None:
    """Does the reasoning of a spoken question start with every number of the question, in order (signs
    aside: a scratchpad writes ``46-66``)? None for a text prompt or a question without numbers."""
    if row.get("input", "audio") != "audio" or not row.get("question"):
        return None
    from models.drift import numbers
    from models.tokenizer import numbers_as_digits

    want = [n.lstrip("-") for n, _, _ in numbers(numbers_as_digits(row["question"]))]
    if not want:
        return None
    # a transcript in words (model.transcript words / both) is read as an ASR's normalizer would
    return [n.lstrip("-") for n, _, _ in numbers(numbers_as_digits(row.get("reasoning") or ""))][: len(want)] == want


def group_metrics(rows: Sequence[dict]) -> dict[str, float | int | None]:
    """The metrics of one group of prediction rows (module doc)."""
    n = len(rows)
    out: dict[str, float | int | None] = {"n": n}
    if not n:
        return out
    correct = sum(bool(r["correct"]) for r in rows)
    out.update({
        "correct": correct,
        "accuracy": round(correct / n, 4),
        "no_answer": round(sum(r["extracted"] is None for r in rows) / n, 4),
        # the thinker ended its answer (a cap on the audio alone does not count against it)
        "eos_rate": round(sum(r["finish_reason"] in ("eos", "max_audio_seconds", "audio_length") for r in rows) / n, 4),
        "errors": sum(bool(r["error"]) for r in rows),
        "spoken_words": _mean(r["spoken_words"] for r in rows),
    })
    for k in MEAN_TIMINGS:
        out[k] = _mean(r["timings"].get(k) for r in rows)
    # The thinker's pace alone: a spoken answer's positions/s include the talker's and codec's work.
    quiet = [r for r in rows if not r["spoken"]] or rows
    out["tokens_per_s"] = _mean(r["timings"].get("tokens_per_s") for r in quiet)
    heard = [x for x in map(heard_numbers, rows) if x is not None]
    out["heard_numbers"] = round(sum(heard) / len(heard), 4) if heard else None
    overlap = [x for x in map(speech_during_reasoning, rows) if x is not None]
    out["speech_during_reasoning"] = round(sum(overlap) / len(overlap), 4) if overlap else None
    # Gaps only mean something for answers spoken to their end (sweep answers are cut short).
    full = [r for r in rows if r["spoken"] and not r["sweep"]]
    out["audio_gaps"] = _mean(r["timings"].get("audio_gaps") for r in full)
    out["audio_seconds"] = _mean(r["timings"].get("audio_seconds") for r in full)
    return out


def ratio_key(ratio: str) -> str:
    """``"1:9"`` -> ``"ratio_1_9"`` (MLflow metric names allow no colon)."""
    return "ratio_" + ratio.replace(":", "_")


def summarize(rows: Sequence[dict], splits: Sequence[str], sweep_ids: set[str] | None = None,
              main_ratio: str = "", inputs: Sequence[str] = ()) -> dict[str, Any]:
    """Flat metrics: ``<split>/<metric>`` and ``overall/<metric>`` over the main rows (asked with the
    first of ``inputs``), ``<split>/<input>_accuracy`` for every input, and ``ratio_<s>_<t>/<metric>``
    over the sweep's questions (``sweep_ids``) at each ratio."""
    inputs = list(inputs) or sorted({r.get("input", "audio") for r in rows if not r["sweep"]})
    asked = [r for r in rows if not r["sweep"]]
    main = [r for r in asked if r.get("input", "audio") == inputs[0]] if inputs else asked
    out: dict[str, Any] = {}
    for name, group in [(s, [r for r in main if r["split"] == s]) for s in splits] + [("overall", main)]:
        for k, v in group_metrics(group).items():
            if v is not None:
                out[f"{name}/{k}"] = v
    for inp in inputs:  # the same questions asked another way: accuracy (and answers) per input
        mine = [r for r in asked if r.get("input", "audio") == inp]
        for name, group in [(s, [r for r in mine if r["split"] == s]) for s in splits] + [("overall", mine)]:
            if group:
                out[f"{name}/{inp}_accuracy"] = round(sum(bool(r["correct"]) for r in group) / len(group), 4)
    if sweep_ids and not main_ratio:
        # A model without a ratio (think-first) on the sweep's questions: the sweep's reference.
        m = group_metrics([r for r in main if r["id"] in sweep_ids])
        for k in SWEEP_METRICS:
            if m.get(k) is not None:
                out[f"sweep_questions/{k}"] = m[k]
    sweep = [r for r in rows if r["sweep"]]
    if sweep and sweep_ids:
        ratios = sorted({r["ratio"] for r in sweep} | {main_ratio}, key=lambda x: tuple(int(v) for v in x.split(":")))
        for ratio in ratios:
            group = [r for r in (main if ratio == main_ratio else sweep) if r["id"] in sweep_ids and r["ratio"] == ratio]
            m = group_metrics(group)
            for k in SWEEP_METRICS:
                if m.get(k) is not None:
                    out[f"{ratio_key(ratio)}/{k}"] = m[k]
    return out


def sweep_table(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"1:9": {"accuracy": ..., ...}, ...}`` from the ``ratio_*`` keys of ``summarize``."""
    out: dict[str, dict[str, Any]] = {}
    for key, v in metrics.items():
        head, _, metric = key.partition("/")
        if head.startswith("ratio_"):
            s, t = head.removeprefix("ratio_").split("_")
            out.setdefault(f"{s}:{t}", {})[metric] = v
    return dict(sorted(out.items(), key=lambda kv: tuple(int(x) for x in kv[0].split(":"))))
