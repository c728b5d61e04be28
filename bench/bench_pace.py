"""How well the streaming talker's estimate of when each response token is said matches the speech.

    .venv/bin/python -m bench.bench_pace --model checkpoints/talker/tis --codec checkpoints/codec \
        [--data data/synthesize] [--session 12] [--modes after,temp:0] [--out bench/results/pace.json]

The talker stage trains on the frames where the TTS really said each response token (``talker.timing:
aligned``); a session cannot know those, so it holds each token for its *estimated* seconds times the
frames per estimated second measured on the training speech (models/talker.py, the duration pace). Per
estimate (``talker.numbers``: ``digits``, 0.45 s a digit; ``words``, a number's tokens sharing the time
of its words; ``learned``, words with each token's seconds measured on the training responses'
aligned timing, ``talker.seconds: learned``), on every validation response with aligned timing:

- ``fps``: codec frames per estimated second, measured on the training responses as the talker stage does;
- ``token_end_error``: mean |estimated - aligned| end frame of each spoken token, and of digits / others;
- ``length_error``: median and mean |estimated - aligned| end frame of the whole response.

With ``--session N`` it also asks N spoken validation questions through the streaming session with each
estimate on the same talker (``bench.bench_intelligibility``'s chain: ASR word recall of the talker's
speech, its chance level, the audio's length against the reference), per ``--modes``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

# name -> (talker.numbers: words, talker.seconds: learned)
ESTIMATES = {"digits": (False, False), "words": (True, False), "learned": (True, True)}


def timing(model, tok, p, data_dir: str, codec_dir: str, estimate: tuple[bool, bool], limit: int = 2000) -> dict:
    """The estimate's frames per second (training responses) and its error against the aligned token end
    frames of the validation responses; for ``learned`` the token seconds are learned on the training
    responses (as the talker stage does) and kept in ``learned``."""
    from models.talker import frame_bounds, learn_seconds, set_pace, token_seconds, token_texts
    from tasks.core.examples import StageData, aligned_responses, frame_ends, speech_pace
    from tasks.core.stages import spec

    numbers, learn = estimate
    train = StageData(data_dir, "train", tok, p, spec("talker"), p.stage("talker"), "tis", codec_dir=codec_dir)
    learned = learn_seconds(aligned_responses(train), token_texts(tok), token_seconds(tok)) if learn else None
    pace = set_pace(model, tok, "duration", 1.0, numbers, learned)
    fps, rows = speech_pace(train, pace.durations, limit)
    val = StageData(data_dir, "validation", tok, p, spec("talker"), p.stage("talker"), "tis", codec_dir=codec_dir)
    base = token_seconds(tok).tolist()  # which tokens are spoken (> 0), as the talker stage's alignment reads it
    err, digit_err, other_err, length = [], [], [], []
    for i in range(len(val)):
        row = val.rows[i]
        if not row.get("response_audio") or not row.get("response_starts"):
            continue
        ids = [int(x) for x in row["response_ids"]]
        frames = len(val.codes(row["response_audio"])) // val.codes.codebooks
        aligned = frame_ends(ids, list(row["response_starts"]), float(row["response_seconds"] or 0), frames, base)
        if aligned is None:
            continue
        w = pace.durations(ids)
        kept = [k for k in range(len(ids)) if float(w[k]) > 0]
        est = frame_bounds(w[kept], frames_per_second=fps)
        if len(est) != len(aligned):
            raise AssertionError(f"row {i}: {len(est)} estimated spoken tokens against {len(aligned)} aligned")
        for k, a, e in zip(kept, aligned, est):
            err.append(abs(a - e))
            (digit_err if tok.decode([ids[k]]).strip().isdigit() else other_err).append(abs(a - e))
        length.append(abs(aligned[-1] - est[-1]))
    if not length:
        raise SystemExit(f"{data_dir}: no validation response with aligned timing (talker.timing: aligned needs "
                         "the synthesize stage's response_starts)")
    mean = lambda xs: round(statistics.fmean(xs), 2) if xs else None  # noqa: E731
    return {"fps": round(fps, 3), "train_responses": rows, "responses": len(length), "tokens": len(err),
            "token_end_error": mean(err), "digit_end_error": mean(digit_err), "other_end_error": mean(other_err),
            "length_error_median": statistics.median(length), "length_error_mean": mean(length),
            **({"learned": learned} if learned else {})}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/talker/tis", help="a step dir or a stage dir (its newest step)")
    ap.add_argument("--codec", default="checkpoints/codec")
    ap.add_argument("--data", default="data/synthesize")
    ap.add_argument("--estimates", default="digits,words,learned", help=f"comma list of {sorted(ESTIMATES)}")
    ap.add_argument("--session", type=int, default=0, help="also ask this many spoken questions per estimate")
    ap.add_argument("--modes", default="after", help="session modes (bench.bench_intelligibility: after, temp:T)")
    ap.add_argument("--max-audio-seconds", type=float, default=20.0)
    ap.add_argument("--out", default="bench/results/pace.json")
    args = ap.parse_args(argv)
    names = args.estimates.split(",")
    if unknown := [n for n in names if n not in ESTIMATES]:
        raise SystemExit(f"unknown estimate(s) {unknown}; use {sorted(ESTIMATES)}")

    import torch

    from bench.bench_intelligibility import answer, questions, summary
    from models.atomic import write_json
    from models.session import Engine
    from models.talker import set_pace
    from tasks.core.checkpoint import latest
    from tasks.core.params import load_params

    torch.set_num_threads(1)
    p = load_params()
    step = latest(args.model)
    engine = Engine.load(step, args.codec)
    out: dict = {"model": str(step), "estimates": {}}
    for name in names:
        t = timing(engine.model, engine.tokenizer, p, args.data, args.codec, ESTIMATES[name])
        out["estimates"][name] = {"timing": t}
        print(name, json.dumps({k: v for k, v in t.items() if k != "learned"}), flush=True)
    if args.session:
        from tasks.codec import load_stage_codec
        from tasks.evaluate.intelligibility import Chain, response_voice, training_responses

        data = Path(args.data)
        chain = Chain.build(training_responses(data), load_stage_codec(args.codec), Path(args.out).parent / "asr",
                            response_voice(data))
        qs = questions(data, args.session)
        engine.warmup()
        for name in names:
            t = out["estimates"][name]["timing"]
            set_pace(engine.model, engine.tokenizer, "duration", t["fps"], ESTIMATES[name][0], t.get("learned"))
            for mode in args.modes.split(","):
                rows = [answer(engine, chain, q, mode, args.max_audio_seconds, qs[(i + 1) % len(qs)]["response"])
                        for i, q in enumerate(qs)]
                out["estimates"][name][mode] = {"summary": summary(rows), "answers": rows}
                print(name, mode, json.dumps(summary(rows)), flush=True)
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
