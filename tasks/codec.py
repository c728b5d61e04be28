"""Stage `codec`: the speech codec whose tokens the talker learns, and those tokens for the dataset.

``codec.kind: world`` fits a ``WorldCodec`` (models/codec.py) on ``codec.fit_clips`` training
response clips; ``codec.kind: mimi`` wraps a local Mimi checkpoint (``codec.path``). Either way the
stage then encodes every response clip of the dataset once, so both talker runs (tis, think_first)
read their targets instead of re-encoding them.

Writes ``checkpoints/codec/`` (codec.json + weights, ``codes.parquet``: response_audio -> flat ids)
and ``metrics/codec.json``.

    python -m tasks.codec
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

from tasks.core.params import ROOT, Params
from tasks.core.stage import StageResult, stage_main

log = logging.getLogger("codec")
PROGRESS_EVERY_S = 15.0

STAGE = "codec"
PARAMS = ["codec"]
DATA = ROOT / "data" / "synthesize"
OUT = ROOT / "checkpoints" / STAGE


def load_stage_codec(codec_dir: str | Path):
    """The codec this stage wrote to ``codec_dir`` (its kind is read from codec.json)."""
    import json

    from models.codec import load_codec

    d = Path(codec_dir)
    cfg = d / "codec.json"
    if not cfg.exists():
        raise FileNotFoundError(f"no codec in {d}; run the codec stage first (`python -m tasks.codec`)")
    return load_codec(f"{json.loads(cfg.read_text())['kind']}:{d}")


def _read(path: Path):
    import soundfile as sf

    return sf.read(str(path), dtype="float32", always_2d=False)


_WORKER_CODEC = None


def _init_worker(codec_dir: str) -> None:
    global _WORKER_CODEC
    _WORKER_CODEC = load_stage_codec(codec_dir)


def _init_analyser(kwargs: dict) -> None:
    global _WORKER_CODEC
    from models.codec import WorldCodec

    _WORKER_CODEC = WorldCodec.analyser(**kwargs)


def _encode(path: str) -> list[int]:
    wave, sr = _read(Path(path))
    return _WORKER_CODEC.flatten(_WORKER_CODEC.encode(wave, sr))


def _analyse(path: str):
    wave, sr = _read(Path(path))
    return _WORKER_CODEC.features(wave, sr), sr


def _pooled(fn, items: list, init, arg, workers: int, what: str = "clips") -> list:
    """``fn`` over ``items`` in ``workers`` processes (each set up by ``init(arg)``), in order; a progress line
    every ``PROGRESS_EVERY_S`` seconds (encoding the default's 1,997 responses takes ~4 minutes on one core)."""
    t0 = last = time.monotonic()
    out: list = []

    def step(x) -> None:
        nonlocal last
        out.append(x)
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or len(out) == len(items):
            last = now
            log.info("codec: %s %d/%d (%.1f/s, %.0f s)", what, len(out), len(items), len(out) / max(now - t0, 1e-9),
                     now - t0)

    if workers <= 1:
        init(arg)
        for x in items:
            step(fn(x))
        return out
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, initializer=init, initargs=(arg,)) as ex:
        for x in ex.map(fn, items, chunksize=16 if len(items) > 64 * workers else 1):
            step(x)
    return out


def run(p: Params, data_dir: Path = DATA, out_dir: Path = OUT, workers: int | None = None) -> dict:
    """Fit (or wrap) the codec, encode every response clip, write ``out_dir``; returns the metrics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.atomic import atomic_dir
    from models.codec import MimiCodec, WorldCodec
    from tasks.core.dataset import load_samples

    t0 = time.time()
    c = p.codec
    rows = [r for split in ("train", "validation") for r in load_samples(data_dir, split) if r["response_audio"]]
    if not rows:
        raise ValueError(f"{data_dir} holds no response audio; the talker needs `synthesize.tts.speak_response: "
                         "true` and a source whose responses are spoken (synthesize.sources[].speak_response, "
                         "default true)")
    train_rows = [r for r in load_samples(data_dir, "train") if r["response_audio"]]
    from tasks.core.cpu import CpuShare

    workers = workers or CpuShare().cores() or (os.cpu_count() or 1) if c.kind == "world" else 1
    if c.kind == "world":
        pick = random.Random(c.seed).sample(train_rows, min(c.fit_clips, len(train_rows)))
        kwargs = {"f0_speed": c.f0_speed}
        analysed = _pooled(_analyse, [str(Path(data_dir) / r["response_audio"]) for r in pick], _init_analyser,
                           kwargs, workers, "clips analysed to fit")
        srs = {sr for _, sr in analysed}
        if len(srs) != 1:
            raise ValueError(f"response clips have mixed sample rates {sorted(srs)}; resample them in synthesize")
        codec = WorldCodec.fit_features([a for a, _ in analysed], codebook_size=c.codebook_size,
                                        n_codebooks=c.n_codebooks, seed=c.seed, **kwargs)
        fitted = len(pick)
    else:
        codec = MimiCodec.load(c.path, c.n_codebooks)
        fitted = 0
    t_fit = time.time() - t0

    with atomic_dir(out_dir) as target:
        codec.save(target)
        paths = [str(Path(data_dir) / r["response_audio"]) for r in rows]
        codes = _pooled(_encode, paths, _init_worker, str(target), workers, "clips encoded")
        table = pa.table({"response_audio": [r["response_audio"] for r in rows],
                          "codes": pa.array(codes, type=pa.list_(pa.int16()))})
        # The talker reads one thinker position per codec frame: its readers need the frame size.
        table = table.replace_schema_metadata({"codebooks": str(codec.codebooks),
                                                "codebook_sizes": json.dumps(list(codec.codebook_sizes))})
        pq.write_table(table, target / "codes.parquet")
    seconds = sum(r["response_seconds"] for r in rows)
    n_tok = sum(len(x) for x in codes)
    return {
        "codec/kind": c.kind,
        "codec/fit_clips": fitted,
        "codec/vocab_size": codec.vocab_size,
        "codec/tokens_per_s": codec.tokens_per_second,
        "codec/encoded_clips": len(rows),
        "codec/encoded_tokens": n_tok,
        "codec/audio_seconds": round(seconds, 1),
        "codec/fit_seconds": round(t_fit, 2),
        "codec/seconds": round(time.time() - t0, 2),
    }


def work(p: Params, fmt: str | None = None, tracker=None) -> StageResult:
    m = run(p)
    return StageResult(m, f"{m['codec/kind']}: {m['codec/tokens_per_s']:.0f} tokens/s, vocab {m['codec/vocab_size']}; "
                          f"encoded {m['codec/encoded_clips']} clips ({m['codec/audio_seconds']:.0f} s of speech) in "
                          f"{m['codec/seconds']:.1f}s", artifacts=[(OUT / "codec.json", None)])


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, PARAMS, work, argv)


if __name__ == "__main__":
    main()
