"""Small spoken-math datasets with real espeak speech, for trainer tests and benchmarks.

Same contract as the `synthesize` stage (tasks/core/dataset.py): built-in problems, drift-checked
tokens, question and response audio as 16 kHz WAV files referenced by relative path.

    from tests.audio_data import make_audio_dataset, make_init
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path


def make_init(out_dir: Path, p=None, tokenizer_corpus: int = 600):
    """A tiny init_model checkpoint (tokenizer + random Qwen2.5-Omni) in ``out_dir``; returns the tokenizer."""
    from models.tokenizer import load_tokenizer
    from tasks import init_model
    from tasks.core.params import load_params

    p = p or load_params()
    p = replace(p, model=replace(p.model, tokenizer_corpus=tokenizer_corpus))
    init_model.run(p, Path(out_dir))
    return load_tokenizer(Path(out_dir) / "tokenizer")


def make_audio_dataset(out_dir: Path, tok, n: int, seed: int = 1, validation_fraction: float = 0.1,
                       schedule=None, rate: int = 200) -> dict:
    """``n`` built-in problems spoken with espeak (question and response) -> a dataset dir; returns stats."""
    from models.drift import DriftError, tokenize_sample
    from models.format import FormatError, Schedule
    from models.tts import EspeakTTS, write_wav
    from tasks.core.dataset import write_dataset
    from tasks.synth.builtin import generate_problems
    from tasks.synth.pipeline import _response_starts
    from tasks.synth.verbalize import speakable

    schedule = schedule or Schedule()
    tts = EspeakTTS(rate=rate)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".audio-", dir=out_dir.parent))
    audio = tmp / "audio"
    audio.mkdir()
    rows, rejected = [], 0
    for i, prob in enumerate(generate_problems(n, seed=seed)):
        try:
            t = tokenize_sample(tok, prob.question, prob.response, prob.reasoning, schedule)
        except (DriftError, FormatError):
            rejected += 1
            continue
        q, sr = tts.synthesize(prob.question)
        spoken = speakable(prob.response)  # as the synthesize stage says it, with when each word starts
        r, _, said = tts.synthesize_timed(spoken)
        write_wav(audio / f"{i:05d}_q.wav", q, sr)
        write_wav(audio / f"{i:05d}_r.wav", r, sr)
        rows.append({**prob.to_dict(), "spoken_question": prob.question, **vars(t),
                     "question_audio": f"audio/{i:05d}_q.wav", "response_audio": f"audio/{i:05d}_r.wav",
                     "question_seconds": len(q) / sr, "response_seconds": len(r) / sr,
                     "response_starts": _response_starts(tok, prob.response, t.response_ids, spoken, said, len(r) / sr)})
    random.Random(seed).shuffle(rows)
    n_val = max(1, round(len(rows) * validation_fraction))
    stats = {"problems": n, "kept": len(rows), "rejected": rejected, "validation": n_val,
             "question_seconds": round(sum(r["question_seconds"] for r in rows), 1),
             "response_seconds": round(sum(r["response_seconds"] for r in rows), 1)}
    write_dataset(out_dir, {"validation": rows[:n_val], "train": rows[n_val:]}, stats, extra_dir=audio)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return stats


@dataclass
class Tiny:
    """A tiny init checkpoint, a small spoken dataset and a codec fitted on it (tests/bench)."""

    root: Path
    init: Path
    data: Path
    codec: Path
    p: object  # tasks.core.params.Params with test-sized trainer and codec settings
    tok: object


_TINY: dict[int, Tiny] = {}


def tiny_setup(n: int = 16) -> Tiny:
    """Built once per process in a temporary folder (removed at exit)."""
    import atexit
    import shutil

    import tasks.codec as codec_stage
    from tasks.core.params import load_params

    if n not in _TINY:
        root = Path(tempfile.mkdtemp(prefix="tiny-trainer-"))
        atexit.register(shutil.rmtree, root, True)
        tok = make_init(root / "init")
        make_audio_dataset(root / "data", tok, n=n, validation_fraction=0.15)
        no_probe = {"probe_every": 0, "probe_problems": 0}  # tests of the probe turn it on themselves
        # align.kinds: [] here: the fixture's 16 questions are a mixture too small to hold every kind in each split
        p = load_params(overrides={"codec": {"fit_clips": 8}, "text_tis": no_probe, "acoustic_tis": no_probe,
                                   "align": {"kinds": []},
                                   "trainer": {"log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 3}})
        codec_stage.run(p, root / "data", root / "codec", workers=1)
        _TINY[n] = Tiny(root, root / "init", root / "data", root / "codec", p, tok)
    return _TINY[n]
