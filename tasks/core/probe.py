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

    def responses(self, model, tokenizer) -> list[str | None]:
        """Each row's spoken response, greedy (None where the answer failed), all rows decoded together: one
        batched thinker forward a position (``models.session.step_all``), each answer exactly what it is
        decoded alone, as evaluation decodes. 24 answers of a TiS ``text_tis`` took 6.3 s one by one, 1.3 s
        together (one thread; 5 s of every probe on the pipeline's longest stage)."""
        import soundfile as sf

        from models.events import DoneEvent
        from models.session import Engine, Options, step_all

        was_training = model.training
        engine = Engine(model, tokenizer, slots=max(1, len(self.rows)))  # sets eval mode; restored below
        try:
            sessions = []
            for row, limit in zip(self.rows, self.limits):
                opts = Options(fmt=self.fmt, speak=self.schedule.speak, think=self.schedule.think,
                               max_new_tokens=limit, audio=False, reasoning=False)
                if self.audio:
                    wave, sr = sf.read(str(self.data.data_dir / row["question_audio"]), dtype="float32")
                    sessions.append(engine.session(audio=(wave, sr), options=opts))
                else:
                    sessions.append(engine.session(text=row["spoken_question"] or row["question"], options=opts))
            done: list = [None] * len(sessions)
            while not all(s.done for s in sessions):
                for i, events in enumerate(step_all(sessions)):
                    done[i] = next((ev for ev in events if isinstance(ev, DoneEvent)), done[i])
        finally:
            model.train(was_training)
        return [ev.response if ev is not None else None for ev in done]

    def __call__(self, model, tokenizer) -> dict[str, float]:
        t0 = time.time()
        right: collections.Counter = collections.Counter()
        total: collections.Counter = collections.Counter()
        for row, response in zip(self.rows, self.responses(model, tokenizer)):
            kind = str(row.get("kind") or "?")
            total[kind] += 1
            right[kind] += response is not None and is_right(response, row["answer"])
        out = {"probe/accuracy": sum(right.values()) / max(1, sum(total.values()))}
        out.update({f"probe/{k}": right[k] / total[k] for k in sorted(total)})
        log.info("probe: %d/%d right (%s) in %.1f s", sum(right.values()), sum(total.values()),
                 ", ".join(f"{k} {right[k]}/{total[k]}" for k in sorted(total)), time.time() - t0)
        return out
