"""The ``evaluate`` stage's work: ask one format's trained model the benchmark, score, report.

``run(p, fmt)`` loads the benchmark (``evaluate.benchmark``: the offline proxy, made from generator
seeds disjoint from training and filtered against ``data/synthesize``; a hub id; or a local copy),
decodes every question through the streaming session (``decode.py``) with each of ``evaluate.inputs``
(the spoken question, its transcript), speaks the first ``audio_per_split`` answers of each
split through talker + codec, and for TiS also decodes the first ``sweep_per_split`` questions at each
``evaluate.sweep`` ratio. It writes ``reports/evaluate/<fmt>/``:

    metrics.json       flat split/metric numbers (summary.py; DVC metrics)
    predictions.jsonl  one row per answer (decode.py), sweep rows flagged ``"sweep": true``
    splits.png         accuracy and spoken words per split
    latency.png        positions and seconds to the first spoken token and the first audio
    wavs/<id>.wav      the spoken answers

    python -m tasks.evaluate --format tis     # what DVC runs (evaluate@tis, evaluate@think_first)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from models.format import format_info
from tasks.core.params import ROOT, Params
from tasks.core.stage import StageResult

log = logging.getLogger("evaluate")
REPORTS = ROOT / "reports" / "evaluate"
MODELS = ROOT / "checkpoints" / "talker"  # the last training stage: thinker + trained talker
CODEC = ROOT / "checkpoints" / "codec"
DATA = ROOT / "data" / "synthesize"


def load_items(p: Params, data_dir: Path | None = None) -> dict:
    """``{split: [Item, ...]}`` of ``evaluate.benchmark`` (the registry in tasks/evaluate/benchmarks/)."""
    from tasks.evaluate.benchmarks import load, resolve

    e = p.evaluate
    _, argument = resolve(e.benchmark)
    local = ROOT / argument if argument else None  # a path relative to the repository, wherever we run
    spec = e.benchmark.replace(argument, str(local), 1) if local is not None and not Path(argument).is_absolute() \
        and local.exists() else e.benchmark
    return load(spec, e.splits, e.limit_per_split, seed=e.seed, training=data_dir or DATA)


def digest(items: dict) -> str:
    """A content hash of the questions (ids, transcripts, golds, audio): equal digests, same benchmark."""
    h = hashlib.sha256()
    for split, its in items.items():
        for it in its:
            h.update(json.dumps([split, it.id, it.transcript, it.answer, it.sample_rate]).encode())
            h.update(it.audio.tobytes())
    return h.hexdigest()[:16]


def make_jobs(p: Params, fmt: str, items: dict) -> tuple[list, set[str]]:
    """The main jobs (every question, at the schedule's ratio for TiS) and, for TiS, the sweep's (the
    first ``sweep_per_split`` questions of each split at every other ratio); returns the jobs and the
    ids of the sweep's questions."""
    from tasks.evaluate.decode import SWEEP_AUDIO_SECONDS, Job, item_seed, max_new_for

    e, sch = p.evaluate, p.schedule
    main = (sch.speak, sch.think)
    jobs: list[Job] = []

    def add(it, k: int, ratio: tuple[int, int], sweep: bool, inp: str) -> None:
        spoken = k < e.audio_per_split and inp == e.inputs[0]
        jobs.append(Job(
            index=len(jobs), item_id=it.id, split=it.split, transcript=it.transcript, answer=it.answer, fmt=fmt,
            speak=ratio[0], think=ratio[1],
            max_new_tokens=max_new_for(e.max_new_tokens, main, ratio) if format_info(fmt).ratio else e.max_new_tokens,
            temperature=e.temperature, seed=item_seed(e.seed, it.id), speak_answer=spoken,
            max_audio_seconds=min(SWEEP_AUDIO_SECONDS, e.max_audio_seconds) if sweep else e.max_audio_seconds,
            sweep=sweep, audio=it.audio if inp == "audio" else None,
            sample_rate=it.sample_rate if inp == "audio" else 0, scoring=it.scoring, input=inp))

    for inp in e.inputs:
        for its in items.values():
            for k, it in enumerate(its):
                add(it, k, main, False, inp)
    sweep_ids: set[str] = set()
    if e.sweep_per_split > 0 and e.sweep:
        # Every format reports its numbers on the sweep's questions: think-first is the sweep's reference.
        for its in items.values():
            sweep_ids |= {it.id for it in its[: e.sweep_per_split]}
    if format_info(fmt).ratio and sweep_ids:
        for ratio in e.sweep:
            if tuple(ratio) == main:
                continue  # the main rows of the same questions stand for it
            for its in items.values():
                for k, it in enumerate(its[: e.sweep_per_split]):
                    add(it, k, tuple(ratio), True, e.inputs[0])
    return jobs, sweep_ids


def _flat(row: dict) -> dict:
    """A prediction row for an MLflow table: timings become columns."""
    return {**{k: v for k, v in row.items() if k != "timings"}, **row["timings"]}


def _wav_name(item_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in item_id) + ".wav"


def run(p: Params, fmt: str = "tis", tracker=None, *, model_dir: Path | None = None, codec_dir: Path | None = None,
        data_dir: Path | None = None, out_dir: Path | None = None, items: dict | None = None,
        engine=None) -> StageResult:
    """Evaluate ``fmt``'s model: the newest checkpoint of ``model_dir`` (default checkpoints/talker/<fmt>),
    the codec in ``codec_dir`` (checkpoints/codec), the proxy kept apart from ``data_dir``
    (data/synthesize); writes ``out_dir`` (reports/evaluate/<fmt>). ``items`` (``{split: [Item]}``)
    replaces the benchmark, ``engine`` a loaded model (tests)."""
    import soundfile as sf

    from models.atomic import atomic_dir, write_json, write_text, write_with
    from models.wave import from_pcm16
    from tasks.core.checkpoint import latest
    import tasks.evaluate.plots as plots
    import tasks.evaluate.intelligibility as intelligibility
    from tasks.evaluate.decode import decode
    from tasks.evaluate.summary import summarize

    t0 = time.time()
    e = p.evaluate
    out = Path(out_dir or REPORTS / fmt)
    ckpt = latest(model_dir or MODELS / fmt)
    codec_dir = Path(codec_dir or CODEC)
    if items is None:
        items = load_items(p, Path(data_dir or DATA))
    bench_digest = digest(items)
    jobs, sweep_ids = make_jobs(p, fmt, items)
    n_main = sum(not j.sweep and j.input == e.inputs[0] for j in jobs)
    log.info("evaluate@%s: %d questions (%s) x inputs %s, %d sweep answers; model %s", fmt, n_main,
             ", ".join(f"{s} {len(v)}" for s, v in items.items()), "+".join(e.inputs),
             sum(j.sweep for j in jobs), ckpt)
    wants_audio = any(j.speak_answer for j in jobs)
    rows: list[dict] = []
    wavs: list[tuple[str, bytes, int]] = []
    pcms: dict[int, tuple[bytes, int]] = {}  # row index -> spoken answer, for the intelligibility chain
    for row, pcm in decode(jobs, ckpt, codec_dir if wants_audio else None, workers=e.ray_workers,
                           what=f"evaluate@{fmt}", engine=engine, batch=e.decode_batch):
        if pcm and not row["sweep"] and row["input"] == e.inputs[0]:
            row["wav"] = f"wavs/{_wav_name(row['id'])}"
            wavs.append((row["wav"], pcm, row["audio_sample_rate"]))
            pcms[len(rows)] = (pcm, row["audio_sample_rate"])
        rows.append(row)
    if rows and all(r["error"] for r in rows):
        raise RuntimeError(f"every answer failed; the first error: {rows[0]['error']}")
    main_ratio = f"{p.schedule.speak}:{p.schedule.think}" if format_info(fmt).ratio else ""
    metrics: dict[str, Any] = summarize(rows, list(items), sweep_ids, main_ratio, inputs=e.inputs)
    # What a listener hears: ASR of the reference, codec resynthesis and talker speech (intelligibility.py)
    metrics.update(intelligibility.assess(rows, pcms, data_dir or DATA, codec_dir, out / "listen"))
    seconds = round(time.time() - t0, 1)
    import torch

    # The latency columns are wall time on this many threads (the flow runs the two formats' evaluations side by
    # side on one core each; by hand: torch's default)
    metrics.update({"evaluate/seconds": seconds, "evaluate/answers": len(rows), "evaluate/threads": torch.get_num_threads()})

    # --- outputs (each written atomically; DVC declares them one by one)
    with atomic_dir(out / "wavs") as tmp:
        for rel, pcm, sr in wavs:
            write_with(tmp / Path(rel).name, lambda t, pcm=pcm, sr=sr: sf.write(str(t), from_pcm16(pcm), sr, format="WAV"))
    preds = write_text(out / "predictions.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    write_json(out / "metrics.json", metrics)
    label = format_info(fmt).label
    pngs = [plots.split_bars({fmt: metrics}, list(items), out / "splits.png", f"{label}: Spoken-MQA ({e.benchmark})"),
            plots.latency({fmt: rows}, out / "latency.png", f"{label}: latency per answer")]
    m = metrics
    summary = (f"accuracy {100 * m.get('overall/accuracy', 0):.1f}% ({m.get('overall/correct', 0)}/{n_main}, "
               f"{e.inputs[0]} input; "
               + ", ".join(f"{i} {100 * m.get(f'overall/{i}_accuracy', 0):.1f}%" for i in e.inputs) + "), "
               f"{m.get('overall/spoken_words', 0):.1f} spoken words, first spoken token after "
               f"{m.get('overall/positions_to_first_text', float('nan')):.1f} positions / "
               f"{m.get('overall/seconds_to_first_text', float('nan')):.3f} s, first audio after "
               f"{m.get('overall/positions_to_first_audio', float('nan')):.1f} positions / "
               f"{m.get('overall/seconds_to_first_audio', float('nan')):.3f} s; {len(rows)} answers in {seconds:.0f} s")
    return StageResult(
        metrics, summary,
        artifacts=[(f, "plots") for f in pngs] + [(preds, "predictions"), (out / "wavs", "wavs")]
        + ([(out / "listen", "listen")] if (out / "listen").is_dir() else []),
        tables={"predictions.json": [_flat(r) for r in rows]},
        tags={"benchmark": e.benchmark, "benchmark_digest": bench_digest, "checkpoint": str(ckpt), "input": e.inputs[0],
              "inputs": ",".join(e.inputs)})


def work(p: Params, fmt: str | None, tracker) -> StageResult:
    return run(p, fmt or "tis", tracker)
