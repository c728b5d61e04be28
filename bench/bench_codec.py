"""Codec benchmark: fit time, encode/decode real-time factors, streaming first-chunk latency, tokens/s.

    .venv/bin/python -m bench.bench_codec [--n-fit 30] [--n-eval 5] [--codec world:DIR] [--out bench/results/codec.json]

Speech comes from espeak (models.tts) reading built-in generated math questions. Without ``--codec``
a WorldCodec is fit on ``--n-fit`` clips first (its fit time is reported). RTF = compute seconds /
audio seconds (lower is faster; < 1 is faster than real time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-fit", type=int, default=30, help="clips to fit a WorldCodec on")
    ap.add_argument("--n-eval", type=int, default=5, help="held-out clips to time encode/decode on")
    ap.add_argument("--codec", default=None, help="load this codec spec instead of fitting (world:DIR, mimi:PATH)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/codec.json")
    args = ap.parse_args(argv)

    import numpy as np

    from models.atomic import write_json
    from models.codec import WorldCodec, load_codec
    from models.tts import EspeakTTS
    from models.wave import resample
    from tasks.synth.builtin import generate_problems

    tts = EspeakTTS()
    texts = [p.question for p in generate_problems(args.n_fit + args.n_eval, seed=args.seed)]
    waves = []
    for t in texts:
        w, sr = tts.synthesize(t)
        waves.append(resample(w, sr, 16000))
    fit_w, eval_w = waves[: args.n_fit], waves[args.n_fit :]
    result: dict = {"machine": platform.machine(), "cpus": os.cpu_count()}
    if args.codec:
        codec = load_codec(args.codec)
        result["codec"] = args.codec
    else:
        t0 = time.perf_counter()
        codec = WorldCodec.fit(fit_w, 16000, seed=args.seed)
        result["fit_s"] = round(time.perf_counter() - t0, 3)
        result["fit_audio_s"] = round(sum(len(w) for w in fit_w) / 16000, 1)
        result["codec"] = "world (fit here)"
    audio_s = sum(len(w) for w in eval_w) / 16000
    t0 = time.perf_counter()
    codes = [codec.encode(w, 16000) for w in eval_w]
    enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = [codec.decode(c) for c in codes]
    dec = time.perf_counter() - t0
    # First streamed chunk: time from the first frames arriving to the first samples out.
    p = codec.stream
    dec_state = codec.stream_decoder()
    t0 = time.perf_counter()
    first = dec_state.push(codes[0][: p.first_frames])
    first_s = time.perf_counter() - t0
    # The block decoder vs one-shot synthesis of all frames (WORLD only): log-spectrogram correlation.
    block_vs_whole = None
    if hasattr(codec, "synthesize_whole"):
        from scipy.signal import stft

        def spec(x):
            return np.log(np.abs(stft(x, codec.sample_rate, nperseg=512, noverlap=352)[2]) ** 2 + 1e-6).ravel()

        block_vs_whole = round(float(np.mean([np.corrcoef(spec(o), spec(codec.synthesize_whole(c)))[0, 1]
                                              for o, c in zip(outs, codes)])), 4)
    n_tokens = sum(c.size for c in codes)
    result.update(
        eval_audio_s=round(audio_s, 2),
        frame_rate=codec.frame_rate,
        codebooks=codec.codebooks,
        vocab_size=codec.vocab_size,
        tokens_per_audio_s=round(n_tokens / audio_s, 1),
        encode_rtf=round(enc / audio_s, 4),
        decode_rtf=round(dec / audio_s, 4),
        encode_tokens_per_s=round(n_tokens / enc, 1),
        decode_tokens_per_s=round(n_tokens / dec, 1),
        stream_first_chunk_compute_s=round(first_s, 4),
        stream_first_chunk_audio_s=round(len(first) / codec.sample_rate, 3),
        stream_first_block_frames=p.first_block_frames,
        stream_block_frames=p.block_frames,
        stream_algorithmic_latency_s=round(p.first_frames / codec.frame_rate, 3),
        block_vs_whole_logspec_corr=block_vs_whole,
        decoded_rms=round(float(np.sqrt(np.mean(np.concatenate(outs) ** 2))), 4),
    )
    print(json.dumps(result, indent=2))
    write_json(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
