"""The loaded model: the engine (models.session, with its model runner's slots), its manifest
(models.manifest, what tasks/package.py wrote) and the scheduler whose thread steps its sessions in
batches (models.session.step_all). One per service process.

    rt = Runtime("path/to/packaged/model", tag="omni-tis:abc")
    session = rt.new_session(question)   # ValueError -> the route answers 422
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from models.manifest import Manifest
from serve.config import SERVE
from serve.requests import AskOptions, Question
from serve.scheduler import Scheduler


class Runtime:
    """The loaded engine, its model thread and the model's manifest."""

    def __init__(self, model_dir: str | Path, tag: str) -> None:
        from models.session import Engine, step_all

        d = Path(model_dir)
        self.manifest = Manifest.read(d)  # FileNotFoundError / ManifestError say how to build one
        self.tag = tag
        codec = d / "codec"
        self.engine = Engine.load(d, codec if (codec / "codec.json").exists() else None, slots=SERVE.max_active)
        self.schedule: dict[str, int] = asdict(self.manifest.schedule)  # {"speak", "think"}: the defaults
        self.fmt = self.manifest.format
        self.engine.warmup()
        self._warm_spoken()
        self.scheduler = Scheduler(SERVE.max_active, SERVE.max_queue, SERVE.admit_ahead_s, step_batch=step_all)
        self.ready = True

    def _warm_spoken(self) -> None:
        """Engine.warmup asks by text: run the feature extractor and audio encoder once too, so the
        first spoken question does not pay for their first call."""
        from models.session import Options

        t = np.arange(16000) / 16000
        wave = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for ev in self.engine.session(audio=(wave, 16000), options=Options(fmt=self.fmt, max_new_tokens=2, audio=False)):
            if ev.type == "error":
                raise RuntimeError(f"warmup (spoken question) failed: {ev.message}")

    def session_options(self, o: AskOptions):
        from models.session import Options

        return Options(fmt=self.fmt, speak=o.speak or self.schedule["speak"], think=o.think or self.schedule["think"],
                       max_new_tokens=o.max_new_tokens, temperature=float(o.temperature), seed=o.seed,
                       audio=o.audio and self.engine.codec is not None, reasoning=o.show_reasoning,
                       max_audio_seconds=SERVE.max_audio_seconds)

    def new_session(self, q: Question):
        """A session for ``q``; ValueError -> 422. A typed question is only tokenized; a spoken one's
        features are computed here, so call it off the event loop for those (serve/routes.py does)."""
        opts = self.session_options(q.options)
        if q.text is not None:
            return self.engine.session(text=q.text, options=opts)
        return self.engine.session(audio=q.audio, options=opts)

    def close(self) -> None:
        self.scheduler.close()
