"""Answer benchmark questions through the streaming session and score them: one prediction row each.

A ``Job`` is one question asked of one model at one decoding setting (format, speak:think, whether the
answer is also spoken). ``answer(engine, job)`` runs it through ``models.session`` exactly as the
service would, scores the spoken response with AudioBench's rule (``metric.is_correct``) and returns a
JSON-safe row: the question, gold, output, extracted answer, correctness, response, reasoning, the
session's timings and the event clock (when the first response text and the reasoning's first and
last deltas reached the caller). ``decode(jobs, ...)`` runs many, in this process or over Ray Data
actors, logging a progress line every few seconds; each process decodes ``batch`` answers together
through its engine's model runner (``answers``: ``models.session.step_all`` over their sessions).

    python -m tasks.evaluate.decode CKPT --codec checkpoints/codec --benchmark proxy --limit 2
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np

from models.format import format_info

log = logging.getLogger("evaluate")
PROGRESS_EVERY_S = 5.0
# Answers a process decodes together (one batched thinker forward per position; models/runner.py).
DECODE_BATCH = 8
# Sweep answers are spoken only this long: enough for the first audio chunk (0.2 s of codec frames for
# the WORLD codec), not for audio gaps; the thinker still runs to the end of the answer.
SWEEP_AUDIO_SECONDS = 1.0


@dataclass(frozen=True)
class Job:
    """One question for one model setting. ``audio``: the spoken question (float32 mono) or None when
    the question is asked as text (``transcript``)."""

    index: int  # position in the run (rows come back in this order)
    item_id: str
    split: str
    transcript: str
    answer: str  # gold, as AudioBench compares it
    fmt: Literal["tis", "think_first"]
    speak: int
    think: int
    max_new_tokens: int
    temperature: float
    seed: int
    speak_answer: bool  # run talker + codec
    max_audio_seconds: float
    sweep: bool  # decoded only for the speak:think sweep
    audio: np.ndarray | None = None
    sample_rate: int = 0
    scoring: str = "audiobench_math"  # tasks.evaluate.metric.SCORERS key, chosen by the benchmark
    input: str = "audio"  # how the question was asked: audio (spoken) or text (transcript)

    @property
    def ratio(self) -> str:
        """``"2:8"`` for TiS; think-first has no ratio (``""``)."""
        return f"{self.speak}:{self.think}" if format_info(self.fmt).ratio else ""


def item_seed(seed: int, item_id: str) -> int:
    """A sampling seed per question, the same in any process and any order."""
    return (seed * 1_000_003 + zlib.crc32(item_id.encode())) % 2**31


def max_new_for(max_new_tokens: int, main: tuple[int, int], ratio: tuple[int, int]) -> int:
    """Thinker positions for TiS at ``ratio`` giving as many speak slots as ``max_new_tokens`` gives
    at ``main``: every ratio may say an answer of the same length (a block is speak + think + 2)."""
    (s0, t0), (s, t) = main, ratio
    speak_slots = max(1, max_new_tokens * s0 // (s0 + t0 + 2))
    return math.ceil(speak_slots / s) * (s + t + 2)


def _session(engine, job: Job):
    from models.session import Options

    opts = Options(fmt=job.fmt, speak=job.speak, think=job.think, max_new_tokens=job.max_new_tokens,
                   temperature=job.temperature, seed=job.seed, audio=job.speak_answer, reasoning=True,
                   max_audio_seconds=job.max_audio_seconds)
    if job.audio is not None:
        return engine.session(audio=(job.audio, job.sample_rate), options=opts)
    return engine.session(text=job.transcript, options=opts)


class _Answer:
    """One job's session and what its events said so far; ``row()`` once the session is done."""

    def __init__(self, job: Job, session, batch: int) -> None:
        self.job, self.session, self.batch = job, session, batch
        # The event clock starts after the prompt's features are made, as the session's own clock does;
        # each time is when the caller received the event (the session timestamps slightly earlier).
        self.t0 = time.perf_counter()
        self.pcm: list[bytes] = []
        self.first_text_s = self.first_reason_s = self.last_reason_s = None
        self.first_reason_pos = self.last_reason_pos = None
        self.audio_sr = 0
        self.done = None
        self.error = ""

    def add(self, events) -> None:
        from models.events import AudioEvent, DoneEvent, ErrorEvent, ReasoningEvent, TextEvent

        now = time.perf_counter() - self.t0
        for ev in events:
            if isinstance(ev, TextEvent) and self.first_text_s is None:
                self.first_text_s = now
            elif isinstance(ev, ReasoningEvent):
                if self.first_reason_s is None:
                    self.first_reason_s, self.first_reason_pos = now, ev.position + 1
                self.last_reason_s, self.last_reason_pos = now, ev.position + 1
            elif isinstance(ev, AudioEvent):
                self.pcm.append(ev.pcm16)
                self.audio_sr = ev.sample_rate
            elif isinstance(ev, DoneEvent):
                self.done = ev
            elif isinstance(ev, ErrorEvent):
                self.error = ev.message

    def row(self) -> tuple[dict[str, Any], bytes]:
        from tasks.evaluate.metric import extract_answer, scorer, spoken_words

        job, done = self.job, self.done
        response = done.response if done else ""
        timings = dict(done.timings) if done else {}
        r4 = lambda x: None if x is None else round(x, 4)  # noqa: E731
        timings.update({
            "event_seconds_to_first_text": r4(self.first_text_s),
            "positions_to_first_reasoning": self.first_reason_pos,
            "seconds_to_first_reasoning": r4(self.first_reason_s),
            "positions_to_reasoning_end": self.last_reason_pos,
            "seconds_to_reasoning_end": r4(self.last_reason_s),
            # answers decoded together (seconds are shared time; positions and talker steps are not)
            "decode_batch": self.batch,
        })
        extracted = extract_answer(response)
        row = {
            "id": job.item_id, "split": job.split, "format": job.fmt, "ratio": job.ratio, "sweep": job.sweep,
            "input": "audio" if job.audio is not None else "text",
            "question": job.transcript, "gold": job.answer, "output": response, "extracted": extracted,
            "correct": bool(done) and scorer(job.scoring)(response, job.answer, job.split),
            "response": response, "reasoning": done.reasoning if done else "",
            "spoken_words": spoken_words(response), "finish_reason": done.finish_reason if done else "error",
            "audio_end": done.audio_end if done else None,
            "spoken": job.speak_answer, "max_audio_seconds": job.max_audio_seconds if job.speak_answer else None,
            "audio_sample_rate": self.audio_sr or None, "wav": "", "error": self.error, "timings": timings,
        }
        return row, b"".join(self.pcm)


def answers(engine, jobs: list[Job], batch: int = 1) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    """(index in ``jobs``, row, pcm16) as each answer ends: up to ``batch`` sessions step together
    (``models.session.step_all``: one batched thinker forward per position), a finished one's place
    going to the next job at once."""
    from models.session import step_all

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    pending = list(enumerate(jobs))[::-1]
    active: list[tuple[int, _Answer]] = []
    while pending or active:
        while pending and len(active) < batch:
            k, job = pending.pop()
            active.append((k, _Answer(job, _session(engine, job), batch)))
        for (_, a), events in zip(active, step_all([a.session for _, a in active])):
            a.add(events)
        for k, a in [x for x in active if x[1].session.done]:
            yield (k, *a.row())
        active = [x for x in active if not x[1].session.done]


def answer(engine, job: Job) -> tuple[dict[str, Any], bytes]:
    """Decode ``job`` alone through a session (``iter(session)``); returns (prediction row, the spoken
    answer as PCM16 bytes), the row ``answers`` gives it in a batch."""
    a = _Answer(job, _session(engine, job), 1)
    for ev in a.session:
        a.add([ev])
    return a.row()


def _progress(what: str, total: int) -> Callable[[dict], None]:
    t0 = last = time.monotonic()
    done = correct = positions = 0

    def step(row: dict) -> None:
        nonlocal last, done, correct, positions
        done += 1
        correct += bool(row["correct"])
        positions += row["timings"].get("thinker_positions") or 0
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or done == total:
            last = now
            log.info("%s: %d/%d answers, %d correct, %.1f s, %.0f thinker positions/s", what, done, total, correct,
                     now - t0, positions / max(now - t0, 1e-9))

    return step


def decode(jobs: list[Job], model_dir: str | Path, codec_dir: str | Path | None, *, workers: int = 0,
           what: str = "evaluate", engine=None, batch: int = DECODE_BATCH) -> Iterator[tuple[dict, bytes]]:
    """(row, pcm16) per job, in job order. ``workers`` 0: here (``engine`` or one loaded from
    ``model_dir``); N: N Ray Data actors, each loading the model once (``RAY_ADDRESS`` joins a cluster,
    whose workers must see ``model_dir``). Each process decodes ``batch`` answers together through its
    engine's model runner (``answers``). The engine is warmed up first so the first question's
    latency is not the process's start-up."""
    if workers > 0:
        progress = _progress(what, len(jobs))  # from the start: the actors load the model meanwhile
        out = sorted(_decode_ray(jobs, str(model_dir), str(codec_dir) if codec_dir else None, workers, progress,
                                 batch), key=lambda x: x[0])
        for _, row, pcm in out:
            yield row, pcm
        return
    if engine is None:
        from models.session import Engine

        engine = Engine.load(model_dir, codec_dir, slots=batch)
    engine.warmup()
    progress = _progress(what, len(jobs))
    ready: dict[int, tuple[dict, bytes]] = {}
    nxt = 0
    for k, row, pcm in answers(engine, jobs, batch):
        progress(row)
        ready[k] = (row, pcm)
        while nxt in ready:  # in job order
            yield ready.pop(nxt)
            nxt += 1


def _init_ray() -> bool:
    """Join ``RAY_ADDRESS`` or start a local Ray without dashboard; True when this call started it."""
    import os

    import ray

    from tasks.core.params import ROOT

    if ray.is_initialized():
        return False
    kw: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if os.environ.get("RAY_ADDRESS"):
        kw["runtime_env"] = {"working_dir": str(ROOT), "excludes": [
            "data/", "checkpoints/", "reports/", ".venv/", ".git/", "mlruns/", "mlflow.db", "*.flac", "*.wav"]}
        ray.init(**kw)
    else:
        kw["runtime_env"] = {"env_vars": {"PYTHONPATH": str(ROOT)}}
        ray.init(**kw)
    return True


class _Answerer:
    """A Ray Data actor: loads the model once, answers one job per row."""

    def __init__(self, model_dir: str, codec_dir: str | None, batch: int = 1):
        import torch

        from models.session import Engine

        torch.set_num_threads(1)  # several actors share the machine's cores
        self.engine = Engine.load(model_dir, codec_dir, slots=batch)
        self.engine.warmup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import json

        jobs = [Job(**json.loads(batch["job"][k]), audio=_audio(batch["audio"][k]),
                    sample_rate=int(batch["sample_rate"][k])) for k in range(len(batch["job"]))]
        rows, pcms, idx = [], [], []
        for k, row, pcm in answers(self.engine, jobs, len(jobs)):  # the rows of a Ray batch decode together
            rows.append(json.dumps(row))
            pcms.append(pcm)
            idx.append(jobs[k].index)
        return {"index": idx, "row": rows, "pcm": pcms}


def _audio(b: bytes) -> np.ndarray | None:
    return np.frombuffer(b, dtype=np.float32).copy() if len(b) else None


def _decode_ray(jobs: list[Job], model_dir: str, codec_dir: str | None, workers: int,
                progress: Callable[[dict], None], batch: int = 1) -> Iterable[tuple[int, dict, bytes]]:
    import json
    import os

    import ray

    started = _init_ray()
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # progress lines instead (DVC logs stay readable)
        records = [{"job": json.dumps({k: v for k, v in asdict(j).items() if k not in ("audio", "sample_rate")}),
                    "audio": b"" if j.audio is None else np.asarray(j.audio, np.float32).tobytes(),
                    "sample_rate": j.sample_rate} for j in jobs]
        # Actors ask for less than a CPU each: a pool asking for whole CPUs deadlocks Ray Data on 2 cores.
        cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        per_actor = max(0.1, min(1.0, 0.9 * cpus / workers))
        ds = ray.data.from_items(records).map_batches(
            _Answerer, fn_constructor_kwargs={"model_dir": model_dir, "codec_dir": codec_dir, "batch": batch},
            batch_size=batch,
            batch_format="numpy", concurrency=workers, num_cpus=per_actor)
        out = []
        for rec in ds.iter_rows():
            row = json.loads(rec["row"])
            progress(row)
            out.append((int(rec["index"]), row, bytes(rec["pcm"])))
        return out
    finally:
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.evaluate.decode", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="checkpoint dir (model/ + tokenizer/) or a stage dir (its newest step)")
    ap.add_argument("--codec", default=None, help="codec stage output; omit for text-only answers")
    ap.add_argument("--benchmark", default="proxy", help="an evaluate.benchmark spec: proxy | hub id | local copy | name:arg")
    ap.add_argument("--training", default="data/synthesize", help="training set the proxy must avoid")
    ap.add_argument("--limit", type=int, default=2, help="questions per split")
    ap.add_argument("--fmt", default="tis", choices=["tis", "think_first"])
    ap.add_argument("--speak", type=int, default=2)
    ap.add_argument("--think", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=288)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import json

    from tasks.core.checkpoint import latest
    from tasks.evaluate.benchmarks import load

    items = [it for its in load(args.benchmark, limit_per_split=args.limit, training=args.training).values() for it in its]
    jobs = [Job(i, it.id, it.split, it.transcript, it.answer, args.fmt, args.speak, args.think, args.max_new_tokens,
                0.0, item_seed(0, it.id), args.codec is not None, 8.0, False, it.audio, it.sample_rate)
            for i, it in enumerate(items)]
    for row, _ in decode(jobs, latest(args.model_dir), args.codec):
        print(json.dumps({k: row[k] for k in ("id", "gold", "extracted", "correct", "output")}), flush=True)


if __name__ == "__main__":
    main()
