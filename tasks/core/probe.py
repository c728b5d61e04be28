"""Held-out accuracy while a TiS stage trains: greedy answers to validation problems, decoded through
the streaming session exactly as evaluation and the service decode, scored on the spoken response.

The probe reads the first ``probe_problems`` rows of the stage's validation split (never trained on),
spread over the problem kinds, and asks each as the stage's input: the question's text with the numbers
in words (what a transcript reads, evaluation's text input) for ``text_tis``, the spoken question for
``acoustic_tis``. The trainer calls it every ``probe_every`` steps and after the last; the curve goes
to MLflow (``probe/accuracy``, ``probe/<kind>``) beside the loss, and to ``metrics/<run>_probe.json``
(DVC plots) and a PNG.

    probe = Probe(val_data, "tis", n=24, max_new_tokens=560)
    probe(model, tokenizer)   # -> {"probe/accuracy": 0.42, "probe/short_digit": 0.5, ...}
"""

from __future__ import annotations

import collections
import itertools
import logging
import time

from models.drift import answer_of, normalize_number

log = logging.getLogger("trainer")


def is_right(response: str, gold: str) -> bool:
    """The response's stated answer ("The answer is N", else its last number) equals the gold number."""
    got = answer_of(response)
    return got is not None and got == normalize_number(str(gold))


class Probe:
    def __init__(self, data, fmt: str, n: int, max_new_tokens: int) -> None:
        from models.format import Role, Schedule

        self.data, self.fmt = data, fmt
        self.schedule: Schedule = data.schedule
        by_kind: dict[str, list[int]] = collections.defaultdict(list)
        for i in range(len(data)):
            by_kind[str(data.rows[i].get("kind") or "?")].append(i)
        # Round-robin over kinds, so every kind is probed even when n is small.
        order = [i for group in itertools.zip_longest(*by_kind.values()) for i in group if i is not None]
        # Each answer may run a little past its reference layout, never further: an untrained model that
        # never ends costs no more than a trained one (a probe is a few seconds, not minutes).
        self.rows, self.limits = [], []
        for i in order:
            if len(self.rows) == n:
                break
            e = data.example(i)
            if isinstance(e, str):
                continue
            self.rows.append(data.rows[i])
            self.limits.append(min(max_new_tokens, sum(r != int(Role.PROMPT) for r in e.roles) + 16))
        self.audio = data.spec.input in ("audio", "replay")  # a replay stage is probed on what it hears

    def __len__(self) -> int:
        return len(self.rows)

    def __call__(self, model, tokenizer) -> dict[str, float]:
        import soundfile as sf

        from models.events import DoneEvent
        from models.session import Engine, Options

        was_training = model.training
        t0 = time.time()
        engine = Engine(model, tokenizer)  # sets eval mode; restored below
        right: collections.Counter = collections.Counter()
        total: collections.Counter = collections.Counter()
        try:
            for row, limit in zip(self.rows, self.limits):
                opts = Options(fmt=self.fmt, speak=self.schedule.speak, think=self.schedule.think,
                               max_new_tokens=limit, audio=False, reasoning=False)
                if self.audio:
                    wave, sr = sf.read(str(self.data.data_dir / row["question_audio"]), dtype="float32")
                    session = engine.session(audio=(wave, sr), options=opts)
                else:
                    session = engine.session(text=row["spoken_question"] or row["question"], options=opts)
                done = next((ev for ev in session if isinstance(ev, DoneEvent)), None)
                kind = str(row.get("kind") or "?")
                total[kind] += 1
                right[kind] += bool(done) and is_right(done.response, row["answer"])
        finally:
            model.train(was_training)
        out = {"probe/accuracy": sum(right.values()) / max(1, sum(total.values()))}
        out.update({f"probe/{k}": right[k] / total[k] for k in sorted(total)})
        log.info("probe: %d/%d right (%s) in %.1f s", sum(right.values()), sum(total.values()),
                 ", ".join(f"{k} {right[k]}/{total[k]}" for k in sorted(total)), time.time() - t0)
        return out
