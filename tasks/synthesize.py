"""Stage `synthesize`: text math problems -> spoken questions, interleaved targets, target speech.

1. collect problems from ``synthesize.sources`` (built-in generator offline; GSM8K, Orca-Math,
   MetaMathQA, SVAMP files or hub ids through Hugging Face ``datasets``);
2-4. rewrite (speakable question, reasoning trace, concise response), speak (TTS, 16 kHz mono) and
   interleave (drift-safe TiS layout), verify (answer, drift, length, audio, offline ASR on
   ``asr_fraction``) with Ray Data ``map_batches`` over shards. ``RAY_ADDRESS`` joins a cluster;
   otherwise a local Ray starts (no dashboard).

Writes ``data/synthesize/{train,validation}.parquet``, ``audio/*.flac`` and ``stats.json`` (the
tasks/core/dataset.py contract; load with ``datasets.load_dataset("parquet", ...)``).

    python -m tasks.synthesize
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tasks.core.params import ROOT, Params, SynthesizeParams
from tasks.core.stage import StageResult, stage_main

STAGE = "synthesize"
PARAMS = ["synthesize", "schedule.speak", "schedule.think"]  # not schedule.mix: training draws those
OUT = ROOT / "data" / STAGE
TOKENIZER = ROOT / "checkpoints" / "init_model" / "tokenizer"
PROGRESS_EVERY_S = 10.0
log = logging.getLogger(STAGE)


def _init_ray(cfg: SynthesizeParams) -> bool:
    """Start or join Ray; returns True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
    kw: dict = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False,
                "configure_logging": False}
    if address:
        # Workers on other machines need this code: ship the repository (not data, checkpoints, venv).
        kw["runtime_env"] = {"working_dir": str(ROOT), "excludes": [
            "data/", "checkpoints/", ".venv/", ".git/", "mlruns/", "mlflow.db", "*.flac", "*.wav", "bench/results/"]}
        ray.init(address=address, **kw)
    else:
        kw["runtime_env"] = {"env_vars": {"PYTHONPATH": str(ROOT)}}
        ray.init(num_cpus=cfg.ray.num_cpus or None, **kw)
    return True


def _process(records: list[dict], rules, cfg: SynthesizeParams, use_ray: bool):
    """Yield processed batches (pandas DataFrames), logging progress lines."""
    from tasks.synth.pipeline import process_batch

    n, done, t0, last = len(records), 0, time.time(), time.time()

    def progress(k: int) -> None:
        nonlocal done, last
        done += k
        if time.time() - last >= PROGRESS_EVERY_S or done == n:
            el = time.time() - t0
            log.info("synthesize: %d/%d records (%.1f/s, %.0f s)", done, n, done / max(el, 1e-9), el)
            last = time.time()

    if not use_ray:
        for i in range(0, n, cfg.ray.batch_size):
            out = process_batch(records[i : i + cfg.ray.batch_size], rules)
            progress(len(out))
            yield out
        return
    import pandas as pd
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # periodic progress lines instead (DVC logs stay readable)
    ds = ray.data.from_pandas(pd.DataFrame(records)).repartition(min(cfg.ray.shards, max(1, n)))
    kw = {"concurrency": cfg.ray.concurrency} if cfg.ray.concurrency else {}
    ds = ds.map_batches(process_batch, fn_kwargs={"rules": rules}, batch_size=cfg.ray.batch_size,
                        batch_format="pandas", **kw)
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        progress(len(batch))
        yield batch


def run(
    p: Params,
    cfg: SynthesizeParams | None = None,
    out_dir: Path = OUT,
    tokenizer_dir: Path = TOKENIZER,
    tokenizer=None,
    use_ray: bool = True,
) -> dict:
    """Synthesize the dataset into ``out_dir``; returns the stats (also written as stats.json).

    ``cfg`` defaults to ``p.synthesize``; ``tokenizer`` (an object) overrides ``tokenizer_dir``.
    ``use_ray=False`` runs the same batches in this process (debugging, tiny tests).
    """
    from models.tokenizer import load_tokenizer
    from tasks.core.dataset import write_dataset
    from tasks.synth.pipeline import Rules
    from tasks.synth.sources import collect

    t0 = time.time()
    cfg = cfg if cfg is not None else getattr(p, "synthesize")
    tok = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_dir)
    records, per_source, skipped = collect(cfg)
    if not records:
        raise RuntimeError("no problems collected; check synthesize.sources in params.yaml")
    rules = Rules(cfg, tok, p.schedule.speak, p.schedule.think, with_audio=True)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage_root = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.audio-", dir=out_dir.parent))
    audio_dir = stage_root / "audio"
    audio_dir.mkdir()
    started_ray = _init_ray(cfg) if use_ray else False
    rejected = Rejections()
    kept: list[dict] = []
    batch_stats: collections.Counter = collections.Counter()
    try:
        for batch in _process(records, rules, cfg, use_ray):
            for row in batch.to_dict("records"):
                if row.get("batch_stats"):
                    batch_stats.update(json.loads(row["batch_stats"]))
                if row["reject"]:
                    rejected.add(row)
                    continue
                kept.append(_save_audio(row, audio_dir, cfg.tts.audio_format))
        kept.sort(key=lambda r: r["idx"])
        if len(kept) < 2:
            raise RuntimeError(f"only {len(kept)} samples survived verification (rejected: {dict(rejected.total)}); "
                               "look at the rejection reasons and the sources")
        random.Random(cfg.seed).shuffle(kept)
        n_val = max(1, round(len(kept) * cfg.validation_fraction))
        splits = {"validation": kept[:n_val], "train": kept[n_val:]}
        stats = _stats(cfg, records, per_source, skipped, kept, splits, rejected, batch_stats, time.time() - t0)
        if cfg.text_pool:
            splits["text"], stats["text_pool"] = _text_pool(cfg, tok, p, kept, use_ray)
        write_dataset(out_dir, splits, stats, extra_dir=audio_dir)
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()
    return stats


def _text_pool(cfg: SynthesizeParams, tok, p: Params, spoken: list[dict], use_ray: bool) -> tuple[list[dict], dict]:
    """``cfg.text_pool`` more built-in problems through the same rewriting and verification, as text only
    (no TTS, so tens of thousands cost seconds): what the text stages learn arithmetic from. Seeds apart
    from the spoken set's; a question the spoken set (train or validation) holds is dropped, so the
    validation split stays held out. Written as ``text.parquet`` (read lazily by the trainer)."""
    import json

    from tasks.synth.builtin import generate_problems
    from tasks.synth.pipeline import Rules

    t0 = time.time()
    taken = {r["question"] for r in spoken}
    records = [{"idx": i, "id": f"pool-{prob.id}", "source": "builtin", "record": json.dumps(prob.to_dict())}
               for i, prob in enumerate(generate_problems(cfg.text_pool, seed=cfg.seed + 1_000_003, style=cfg.trace))
               if prob.question not in taken]
    rules = Rules(cfg, tok, p.schedule.speak, p.schedule.think, with_audio=False)
    rows, rejected = [], collections.Counter()
    for batch in _process(records, rules, cfg, use_ray):
        for row in batch.to_dict("records"):
            if row["reject"]:
                rejected[row["reject"]] += 1
            elif row["question"] not in taken:
                taken.add(row["question"])  # a pool question once
                rows.append(_save_audio(row, Path(), cfg.tts.audio_format))
    rows.sort(key=lambda r: r["idx"])
    stats = {"records": len(records), "kept": len(rows), "rejected": dict(sorted(rejected.items())),
             "kinds": dict(collections.Counter(r["kind"] for r in rows)),
             "tokens_per_sample": round(statistics.mean(r["n_tokens"] for r in rows), 1) if rows else None,
             "seconds": round(time.time() - t0, 2)}
    log.info("synthesize: text pool %d of %d problems kept (rejected %s) in %.0f s", len(rows), len(records),
             dict(rejected), stats["seconds"])
    return rows, stats


EXAMPLES_PER_REASON = 3
EXAMPLE_FIELDS = ("id", "source", "question", "spoken_question", "response", "spoken_response", "detail")


class Rejections:
    """Rejected rows counted by reason (overall and per source kind), with the first few examples
    of each reason (lowest record index first, so the same on any number of Ray workers)."""

    def __init__(self) -> None:
        self.total: collections.Counter[str] = collections.Counter()
        self.by_source: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.examples: dict[str, list[tuple[int, dict]]] = collections.defaultdict(list)

    def add(self, row: dict) -> None:
        reason = row["reject"]
        self.total[reason] += 1
        self.by_source[str(row.get("source") or "?")][reason] += 1
        ex = self.examples[reason]
        ex.append((int(row["idx"]), {k: str(row.get(k) or "") for k in EXAMPLE_FIELDS}))
        ex.sort(key=lambda t: t[0])
        del ex[EXAMPLES_PER_REASON:]

    def example_rows(self) -> dict[str, list[dict]]:
        return {r: [e for _, e in self.examples[r]] for r in sorted(self.examples)}


def _save_audio(row: dict, audio_dir: Path, fmt: str) -> dict:
    """Write the row's audio bytes to files; the row keeps paths relative to the dataset dir."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in row["id"])
    out = {k: v for k, v in row.items()
           if k not in ("question_wav", "response_wav", "batch_stats", "reject", "detail", "spoken_response")}
    for col, wav_col, tag in (("question_audio", "question_wav", "q"), ("response_audio", "response_wav", "r")):
        data = row.get(wav_col) or b""
        if data:
            name = f"{safe}_{tag}.{fmt}"
            (audio_dir / name).write_bytes(data)
            out[col] = f"audio/{name}"
        else:
            out[col] = ""
    for c in ("question_ids", "response_ids", "reasoning_ids", "min_block"):
        out[c] = [int(x) for x in out[c]]
    return out


def _stats(cfg, records, per_source, skipped, kept, splits, rejected: Rejections, bs, seconds) -> dict:
    words = [len(r["response"].split()) for r in kept]
    q_sec = sum(r["question_seconds"] for r in kept)
    r_sec = sum(r["response_seconds"] for r in kept)
    return {
        "records": len(records),
        "sources": per_source,
        "skipped_source_records": {k: dict(v) for k, v in skipped.items() if v},
        "kept": len(kept),
        "kept_by_source": dict(sorted(collections.Counter(r["source"] for r in kept).items())),
        "train": len(splits["train"]),
        "validation": len(splits["validation"]),
        "rejected": dict(sorted(rejected.total.items())),
        "rejected_total": sum(rejected.total.values()),
        "rejected_by_source": {k: dict(sorted(v.items())) for k, v in sorted(rejected.by_source.items())},
        "rejected_examples": rejected.example_rows(),
        "kinds": dict(collections.Counter(r["kind"] for r in kept)),
        "audio_hours": round((q_sec + r_sec) / 3600, 4),
        "question_audio_hours": round(q_sec / 3600, 4),
        "response_audio_hours": round(r_sec / 3600, 4),
        "words_per_response": {"mean": round(statistics.mean(words), 2), "median": statistics.median(words),
                               "max": max(words)},
        "tokens_per_sample": round(statistics.mean(r["n_tokens"] for r in kept), 1),
        "tts_rtf": round(bs["tts_seconds"] / bs["tts_audio_seconds"], 5) if bs["tts_audio_seconds"] else None,
        "asr_checked": int(bs["asr_checked"]),
        # responses whose tokens got start times from the TTS's word times (the talker's alignment)
        "response_aligned": int(bs["response_aligned"]),
        "asr_mean_recall": round(bs["asr_recall_sum"] / bs["asr_checked"], 3) if bs["asr_checked"] else None,
        "llm": {k: int(bs[k]) for k in ("llm_calls", "llm_fallback", "llm_errors")},
        "seconds": round(seconds, 2),
        "samples_per_second": round(len(records) / seconds, 2),
    }


def work(p: Params, fmt: str | None = None, tracker=None) -> StageResult:
    stats = run(p, p.synthesize)
    flat = {"data/kept": stats["kept"], "data/train": stats["train"], "data/validation": stats["validation"],
            "data/audio_hours": stats["audio_hours"], "data/words_per_response": stats["words_per_response"]["mean"],
            "data/samples_per_second": stats["samples_per_second"],
            **{f"data/rejected_{k}": v for k, v in stats["rejected"].items()}}
    if stats["tts_rtf"] is not None:
        flat["data/tts_rtf"] = stats["tts_rtf"]
    if stats.get("text_pool"):
        flat["data/text_pool"] = stats["text_pool"]["kept"]
    audio = [(f, "audio_samples") for f in sorted((OUT / "audio").glob("*"))[:6]]  # a few pairs to listen to
    examples = [{"reason": r, **e} for r, ex in stats["rejected_examples"].items() for e in ex]
    return StageResult(stats, f"kept {stats['kept']} of {stats['records']} records (rejected {stats['rejected']}) "
                              f"in {stats['seconds']:.0f} s", artifacts=[(OUT / "stats.json", None), *audio],
                       tables={"rejected_examples.json": examples}, logged=flat)


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, PARAMS, work, argv)


if __name__ == "__main__":
    main()
