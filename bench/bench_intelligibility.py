"""Intelligibility benchmark: how much of the spoken answer an offline ASR hears, and whether the audio
ends with the answer.

    .venv/bin/python -m bench.bench_intelligibility --model checkpoints/talker/tis --codec checkpoints/codec \
        [--data data/synthesize] [--n 8] [--out bench/results/intelligibility.json]

Asks ``--n`` spoken validation questions of ``data/synthesize`` through the streaming session and runs
the evaluation's chain on each answer (tasks/evaluate/intelligibility.py): ASR word recall of the TTS
reference of the response, of the codec's resynthesis of it and of the talker's speech; the heard
answer; the talker audio's length against the reference's, its RMS level, whether it is all zeros,
why it ended, and the CPU seconds each answer took. Two decoding modes, same model and questions:

- ``before``: what the session did before the end rules (greedy talker with a greedy thinker, no
  response-length bound, no end-of-speech silence): the talker ran to ``--max-audio-seconds``.
- ``after``: the session's defaults (the talker samples, ``AUDIO_BOUND`` x ``speaking_seconds``, ``END_SILENCE_S``).
- ``temp:T``: ``after`` with the talker sampling at temperature T (``--modes after,temp:0.5,temp:0``).

With ``--curve DIR`` it instead evaluates every checkpoint ``step-*`` of a talker run in DIR (the
``after`` mode) and writes the recall-against-steps curve (JSON and PNG beside ``--out``; with
``--mlflow EXPERIMENT`` also an MLflow run ``talker_curve``: ``curve/*`` metrics per step + the PNG).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

MODES = {
    "before": dict(talker_temperature=0.0, audio_bound=None, end_silence_seconds=None),
    "after": {},
}


def mode_options(mode: str) -> dict:
    """``before``, ``after`` or ``temp:T``: the session's defaults with the talker sampling at temperature
    T (0 = greedy)."""
    if mode.startswith("temp:"):
        return {"talker_temperature": float(mode.split(":", 1)[1])}
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}; use before, after or temp:T (e.g. temp:0.5)")
    return MODES[mode]


def questions(data_dir: Path, n: int) -> list[dict]:
    """The first ``n`` validation rows with their spoken question loaded."""
    import soundfile as sf

    from tasks.core.dataset import load_samples

    rows = [r for r in load_samples(data_dir, "validation") if r.get("question_audio")][:n]
    for r in rows:
        r["wave"], r["sr"] = sf.read(str(data_dir / r["question_audio"]), dtype="float32", always_2d=False)
    return rows


def answer(engine, chain, q: dict, mode: str, max_audio_seconds: float, other: str | None = None) -> dict:
    import numpy as np

    from models.events import AudioEvent, DoneEvent
    from models.session import Options
    from models.wave import from_pcm16

    opts = Options(max_new_tokens=288, max_audio_seconds=max_audio_seconds, **mode_options(mode))
    cpu0, t0 = time.process_time(), time.perf_counter()
    pcm, done = [], None
    for ev in engine.session(audio=(q["wave"], q["sr"]), options=opts):
        if isinstance(ev, AudioEvent):
            pcm.append(ev.pcm16)
        elif isinstance(ev, DoneEvent):
            done = ev
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    wave = from_pcm16(b"".join(pcm))
    heard = chain.hear(done.response, wave, engine.sample_rate, q["answer"], q["kind"], done.audio_end,
                       other_response=other)
    return {"id": q["id"], "response": done.response, "finish_reason": done.finish_reason, "audio_end": done.audio_end,
            "all_zero": bool(len(wave)) and not np.any(wave), "cpu_seconds": round(cpu, 3),
            "wall_seconds": round(wall, 3), **heard}


def summary(rows: list[dict]) -> dict:
    med = lambda k: round(statistics.median(r[k] for r in rows if r.get(k) is not None), 4)  # noqa: E731
    mean = lambda k: round(statistics.fmean(float(r[k]) for r in rows if r.get(k) is not None), 4)  # noqa: E731
    return {"answers": len(rows), "recall_reference": mean("recall_reference"),
            "recall_resynthesis": mean("recall_resynthesis"), "recall_talker": mean("recall_talker"),
            "recall_talker_chance": mean("recall_talker_chance"),
            "heard_accuracy": mean("heard_correct"), "all_zero": sum(r["all_zero"] for r in rows),
            "capped": sum(r["audio_capped"] for r in rows), "audio_end": {e: sum(r["audio_end"] == e for r in rows)
                                                                       for e in {r["audio_end"] for r in rows}},
            "talker_seconds": med("talker_seconds"), "reference_seconds": med("reference_seconds"),
            "audio_length_ratio": med("audio_length_ratio"), "talker_dbfs": med("talker_dbfs"),
            "reference_dbfs": med("reference_dbfs"), "cpu_seconds_per_answer": med("cpu_seconds")}


def curve_png(curve: list[dict], path: Path) -> Path:
    """ASR recall of the talker's speech (and its chance level, the codec's ceiling) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in curve]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label, style in [("recall_talker", "talker", "o-"), ("recall_talker_chance", "talker vs another answer (chance)", "x--"),
                              ("recall_resynthesis", "codec resynthesis (ceiling)", "s:"), ("recall_reference", "TTS reference", "^:")]:
        ax.plot(steps, [c.get(key) for c in curve], style, label=label)
    ax.set_xlabel("talker training steps")
    ax.set_ylabel("ASR word recall")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/talker/tis", help="a step dir or a stage dir (its newest step)")
    ap.add_argument("--codec", default="checkpoints/codec")
    ap.add_argument("--data", default="data/synthesize")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-audio-seconds", type=float, default=20.0,
                    help="the hard cap (evaluate.max_audio_seconds); the session's length bound ends a normal answer first")
    ap.add_argument("--modes", default="before,after")
    ap.add_argument("--curve", default=None, help="a talker run's dir: evaluate each step-* checkpoint")
    ap.add_argument("--mlflow", default=None, help="with --curve: log it to this MLflow experiment")
    ap.add_argument("--out", default="bench/results/intelligibility.json")
    args = ap.parse_args(argv)

    import torch

    from models.atomic import write_json
    from models.session import Engine
    from tasks.codec import load_stage_codec
    from tasks.core.checkpoint import latest
    from tasks.evaluate.intelligibility import Chain, response_voice, training_responses

    torch.set_num_threads(1)
    data = Path(args.data)
    codec = load_stage_codec(args.codec)
    chain = Chain.build(training_responses(data), codec, Path(args.out).parent / "asr", response_voice(data))
    qs = questions(data, args.n)
    out: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": 1},
                 "questions": len(qs), "max_audio_seconds": args.max_audio_seconds}
    if args.curve:
        curve = []
        for step_dir in sorted(Path(args.curve).glob("step-*")):
            engine = Engine.load(step_dir, args.codec)
            rows = [answer(engine, chain, q, "after", args.max_audio_seconds, qs[(i + 1) % len(qs)]["response"])
                    for i, q in enumerate(qs)]
            point = {"step": int(step_dir.name.split("-")[1]), **summary(rows)}
            print(json.dumps(point), flush=True)
            curve.append(point)
        out["curve"] = curve
        png = curve_png(curve, Path(args.out).with_suffix(".png"))
        out["png"] = str(png)
        if args.mlflow:  # the curve as an MLflow run: metrics per step and the PNG
            from tasks.core.tracking import stage_run

            with stage_run("talker_curve", args.mlflow, params={"questions": len(qs), "run": args.curve}) as tr:
                for point in curve:
                    tr.metrics({f"curve/{k}": point[k] for k in ("recall_talker", "recall_talker_chance",
                                "recall_resynthesis", "recall_reference", "heard_accuracy", "audio_length_ratio")
                                if point.get(k) is not None}, step=point["step"])
                tr.artifact(png, "plots")
    else:
        engine = Engine.load(latest(args.model), args.codec)
        engine.warmup()
        out["model"] = str(latest(args.model))
        for mode in args.modes.split(","):
            rows = [answer(engine, chain, q, mode, args.max_audio_seconds, qs[(i + 1) % len(qs)]["response"])
                    for i, q in enumerate(qs)]
            out[mode] = {"summary": summary(rows), "answers": rows}
            print(mode, json.dumps(out[mode]["summary"]), flush=True)
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
