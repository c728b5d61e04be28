"""The offline proxy of Spoken-MQA: built-in generator problems from seeds disjoint from every seed
training uses, minus any question in the training set, spoken like training (``speakable`` + espeak).

    python -m tasks.evaluate.benchmarks proxy OUT_DIR --n 25 --training data/synthesize
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger("evaluate")

from tasks.evaluate.benchmarks.base import (DEFAULT_VOICES, MAX_PROXY_SEED, PROXY_KINDS, PROXY_SEED_BASE, SPLITS,
                                            BenchmarkError, Item, Request, _key, _speak, by_split,
                                            training_keys)

def proxy_seed(split: str, seed: int = 0) -> int:
    """The generator seed of one proxy split; far from every seed training uses (PROXY_SEED_BASE)."""
    if split not in PROXY_KINDS:
        raise BenchmarkError(f"the proxy has no split {split!r}; choose from {list(PROXY_KINDS)}")
    if not 0 <= seed < MAX_PROXY_SEED:
        raise BenchmarkError(f"proxy seed must be in [0, {MAX_PROXY_SEED}), got {seed}")
    return PROXY_SEED_BASE + len(PROXY_KINDS) * seed + list(PROXY_KINDS).index(split)


def proxy_questions(n_per_split: int, *, training: Iterable[str] | str | Path, seed: int = 0,
                    splits: Sequence[str] = SPLITS) -> dict[str, list[tuple[str, str, str]]]:
    """``{split: [(question, spoken question, answer), ...]}``: the proxy's text, ``n_per_split`` each.

    A generated question is dropped when it, or its spoken form, occurs in ``training`` (see
    :func:`training_keys`; compared case- and whitespace-insensitively), or repeats an
    earlier proxy question; the generator then runs further (same seed) until ``n_per_split`` are kept.
    """
    from tasks.synth.builtin import generate_problems
    from tasks.synth.verbalize import speakable

    if n_per_split < 1:
        raise BenchmarkError(f"n_per_split must be >= 1, got {n_per_split}")
    seen = training_keys(training)
    out = {}
    for split in splits:
        s = proxy_seed(split, seed)
        m, cap = max(2 * n_per_split, n_per_split + 50), 64 * n_per_split + 1000
        while True:
            kept: list[tuple[str, str, str]] = []
            keys: set[str] = set()
            dropped = repeated = 0
            for p in generate_problems(m, seed=s, kinds=(PROXY_KINDS[split],)):
                spoken = speakable(p.question)
                k = {_key(p.question), _key(spoken)}
                if k & seen:
                    dropped += 1
                elif k & keys:
                    repeated += 1
                else:
                    keys |= k
                    kept.append((p.question, spoken, p.answer))
                    if len(kept) == n_per_split:
                        break
            if len(kept) == n_per_split or m >= cap:
                break
            m *= 2
        if len(kept) < n_per_split:
            raise BenchmarkError(
                f"only {len(kept)} of {n_per_split} {split} proxy questions are new (not in training, not "
                f"repeated) among {m} generated; ask for fewer per split"
            )
        seen |= keys
        log.info("proxy %s: %d questions (seed %d; dropped %d found in training, %d repeats)",
                 split, len(kept), s, dropped, repeated)
        out[split] = kept
    return out


def make_proxy(n_per_split: int, *, training: Iterable[str] | str | Path, seed: int = 0,
               splits: Sequence[str] = SPLITS, voices: Sequence[str] = DEFAULT_VOICES,
               rate: tuple[int, int] = (150, 190), pitch: tuple[int, int] = (35, 65)) -> list[Item]:
    """The offline proxy: :func:`proxy_questions` spoken by espeak (16 kHz). Item ids ``<split>-<i>``."""
    texts = [(f"{split}-{i}", split, spoken, answer)
             for split, qs in proxy_questions(n_per_split, training=training, seed=seed, splits=splits).items()
             for i, (_, spoken, answer) in enumerate(qs)]
    return _speak(texts, voices, rate, pitch, seed, "proxy")


class Proxy:
    """``proxy``: ``limit_per_split`` questions per split (it has no fixed size)."""

    name = "proxy"
    scoring = "audiobench_math"

    def items(self, request: Request) -> dict[str, list[Item]]:
        if request.limit_per_split < 1:
            raise BenchmarkError("the proxy has no fixed size: set evaluate.limit_per_split >= 1 (questions per split)")
        made = make_proxy(request.limit_per_split, training=request.training if request.training is not None else (),
                          seed=request.seed, splits=request.splits)
        return by_split(made, request.splits)
