"""Streaming inference: one ``Session`` per request composes the thinker, the talker and the codec.

Each ``step()`` places one thinker position (``models.decode``) and does the talker and codec work
that became due: the talker (``models.talker.TalkerStream``) reads one thinker position per codec
frame, from the first response position on, so codec frame ``f`` is due once the thinker has made
position ``first response + f``; the codec's streaming decoder (``models.codec.StreamDecoder``) emits
its short first block once ``first_block_frames + lookahead_frames`` frames exist (10 frames = 40
talker steps for the WORLD codec: in TiS after 11 thinker positions). After the thinker ends, each
``step()`` makes one more codec frame until the speech ends: the talker's eos, or the session's end
rules (trailing silence once the response is read; a bound of ``AUDIO_BOUND`` x the response's
speaking time; the ``max_audio_seconds`` cap), reported as ``DoneEvent.audio_end``. A session holds
only its own state (its slots in the engine's ``models.runner.Runner``, cursor, generators, decoder);
nothing is set on the shared model. ``step_all(sessions)`` advances many sessions by one ``step()``
each with one batched thinker forward and batched talker steps; ``session.step()`` is
``step_all([session])``.

    engine = Engine.load("checkpoints/talker/tis/step-00000160", codec_dir="checkpoints/codec")
    for ev in engine.session(text="What is 3 plus 4?", options=Options(temperature=0.0)):
        print(ev.type, ev.to_dict() if ev.type != "audio" else ev.seq)
    sessions = [engine.session(text=q) for q in questions]
    while not all(s.done for s in sessions):
        for s, events in zip(sessions, step_all(sessions)): ...

    python -m models.session MODEL_DIR [--codec DIR] (--text "..." | --wav q.wav) [--out answer.wav]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

from models.events import AudioEvent, DoneEvent, ErrorEvent, Event, ReasoningEvent, TextEvent
from models.format import Role, Schedule, cursor_for
from models.streams import token_embeddings
from models.talker import attach_pace, feeds_previous, speaking_seconds

log = logging.getLogger(__name__)

TALKER_SEED_OFFSET = 1  # the talker samples from its own generator, seeded seed + 1
TALKER_TOP_K = 40
# The talker samples even when the thinker is greedy (Qwen2.5-Omni's talker samples at 0.9, top-k 40).
# Greedy codec decoding settles on the single most probable frame, which in speech is a pause (the
# WORLD codec's pause frames decode to exact digital zeros), and it then repeats that frame forever and
# never reaches its eos: every answer was silence up to the audio cap. Sampling is still reproducible
# (its own seeded generator).
TALKER_TEMPERATURE = 0.9
# A talker that reads no previous codec ids (talker.previous: none) cannot loop on a pause frame, and its
# draws are independent per frame, so a high temperature only adds noise: session recall of the 480-step
# one-voice talker (12 answers, README) 0.39 at 0.9, 0.51 at 0.5, 0.49 greedy; at 640 steps 0.52 / 0.60 / 0.55.
TALKER_TEMPERATURE_NO_PREVIOUS = 0.5


def talker_temperature(model) -> float:
    """The talker's default temperature: TALKER_TEMPERATURE, or TALKER_TEMPERATURE_NO_PREVIOUS for a talker that
    reads no previous codec ids."""
    return TALKER_TEMPERATURE if feeds_previous(model) else TALKER_TEMPERATURE_NO_PREVIOUS
# How long a response takes to say, from its text: ``speaking_seconds`` (models/talker.py). On the
# synthesized training responses the real length over this estimate is 0.66-1.49 (median 0.96). Once
# the thinker has ended, a talker that never says eos is stopped at AUDIO_BOUND x the estimate +
# AUDIO_SLACK_S ("audio_length"): past every training response, and within ~1.6x of what a normal
# answer takes to say.
AUDIO_BOUND = 1.5
AUDIO_SLACK_S = 0.5
# Nor may the talker end before the response is said: its eos is allowed only once it has read the
# whole response (the text eos) and spoken MIN_SPEECH x the estimate (no training response is shorter
# than 0.66x). Measured: a talker trained 160 steps said eos after 0.1 s of every answer without it.
MIN_SPEECH = 0.6
# End of speech: once the talker has read the whole response (the text eos), this much trailing
# silence in the decoded audio ends the answer (a pause inside speech is < 0.4 s in the training
# speech); twice this much silence anywhere ends it too (a talker stuck in a pause).
END_SILENCE_S = 0.5
SILENCE_DBFS = -50.0  # a 10 ms window of decoded audio below this RMS level is silent


@dataclass(frozen=True)
class Options:
    """Per-request decoding options (validated here, so a service can turn bad input into a 400)."""

    fmt: Literal["tis", "think_first"] = "tis"
    speak: int = 2  # schedule forced at decoding: any ratio can be asked of one model
    think: int = 8
    max_new_tokens: int = 512  # thinker positions after the prompt
    temperature: float = 0.0  # 0 = greedy
    seed: int = 0  # sampling seed (thinker and talker); same seed -> same events
    audio: bool = True  # run talker + codec; False = text only (fast evaluation)
    reasoning: bool = True  # emit ReasoningEvent deltas
    talker_temperature: float | None = None  # None: TALKER_TEMPERATURE, or TALKER_TEMPERATURE_NO_PREVIOUS for a talker
    #   that reads no previous codec ids (0 = greedy)
    max_audio_seconds: float = 30.0  # hard cap: the talker stops here if nothing else ended it
    audio_bound: float | None = AUDIO_BOUND  # audio <= this x speaking_seconds(response) + slack; None: no bound
    min_speech: float | None = MIN_SPEECH  # no talker eos before the text eos and this x speaking_seconds; None: off
    end_silence_seconds: float | None = END_SILENCE_S  # trailing silence that ends the speech; None: off

    def __post_init__(self) -> None:
        if self.fmt not in ("tis", "think_first"):
            raise ValueError(f"fmt must be 'tis' or 'think_first', got {self.fmt!r}")
        for name in ("speak", "think", "max_new_tokens", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if self.speak < 1 or self.think < 1:
            raise ValueError(f"speak and think must be >= 1, got speak={self.speak} think={self.think}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("temperature", "talker_temperature"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
                raise ValueError(f"{name} must be a number >= 0 (0 = greedy), got {v!r}")
        if isinstance(self.max_audio_seconds, bool) or not isinstance(self.max_audio_seconds, (int, float)) \
                or not self.max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be > 0, got {self.max_audio_seconds!r}")
        for name in ("audio_bound", "end_silence_seconds", "min_speech"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise ValueError(f"{name} must be a number > 0 (or None: off), got {v!r}")
        for name in ("audio", "reasoning"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")


class Engine:
    """The loaded model, tokenizer and codec, shared by all sessions (which never modify them)."""

    def __init__(self, model, tokenizer, codec=None, device=None, slots: int = 16,
                 compile: bool | str = False) -> None:
        import threading

        import torch

        from models.talker import _check_codec_ids
        from models.tokenizer import control_ids

        if device is not None:
            model = model.to(device)
        self.model = model.eval()  # once per engine; sessions set nothing on it
        self.tokenizer = tokenizer
        self.codec = codec
        self.device = next(model.thinker.parameters()).device if device is None else torch.device(device)
        self.ids = control_ids(tokenizer)
        self.sample_rate: int | None = codec.sample_rate if codec is not None else None
        if codec is not None:
            _check_codec_ids(model, [codec.vocab_size - 1])
        self.slots = slots
        self.compile = compile  # the runner's decode steps: False eager, True / a torch.compile mode, "static"
        self._runner = None
        self._runner_lock = threading.Lock()

    @property
    def runner(self):
        """The model runner (models.runner.Runner): every session's thinker and talker slots; made on
        first use."""
        with self._runner_lock:
            if self._runner is None:
                from models.runner import Runner

                self._runner = Runner(self.model, slots=self.slots, compile=self.compile)
            return self._runner

    @classmethod
    def load(cls, model_dir: str | Path, codec_dir: str | Path | None = None, device: str | None = None,
             dtype: str = "auto", slots: int = 16, compile: bool | str = False) -> "Engine":
        """A checkpoint directory with ``model/`` and ``tokenizer/`` (e.g. a training stage's
        ``step-XXXXXXXX``), and optionally the codec stage's output directory. ``slots``: sessions the
        runner holds before it grows; ``compile``: see ``models.runner.SlotLM``."""
        import torch

        from models.codec import load_codec
        from models.omni import load_checkpoint

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        if dtype == "auto":
            dtype = "bf16" if torch.device(device).type == "cuda" else "fp32"
        if dtype not in dtypes:
            raise ValueError(f"dtype must be auto, bf16, fp16 or fp32, got {dtype!r}")
        model, tokenizer = load_checkpoint(model_dir, dtypes[dtype])
        attach_pace(model, tokenizer)  # the talker's pace, as its config names it
        codec = None
        if codec_dir is not None:
            cfg = Path(codec_dir) / "codec.json"
            if not cfg.exists():
                raise FileNotFoundError(f"no codec in {codec_dir} (no codec.json); pass the codec stage's output")
            codec = load_codec(f"{json.loads(cfg.read_text())['kind']}:{codec_dir}")
        return cls(model, tokenizer, codec, device, slots=slots, compile=compile)

    def session(self, *, text: str | None = None, audio: tuple[np.ndarray, int] | None = None,
                options: Options = Options()) -> "Session":
        """A new request: exactly one of ``text`` (the question) or ``audio`` ``(mono wave, sample rate)``."""
        import torch

        from models.audio import SAMPLE_RATE, audio_prompt, log_mel, n_audio_tokens
        from models.tokenizer import text_prompt
        from models.wave import WaveError, as_mono, resample

        if not isinstance(options, Options):
            raise ValueError(f"options must be a models.session.Options, got {type(options).__name__}")
        if (text is None) == (audio is None):
            raise ValueError("pass exactly one of text= (the question) or audio= ((wave, sample_rate))")
        if options.audio and self.codec is None:
            raise ValueError("this engine has no codec, so it cannot speak: load it with codec_dir=... "
                             "or ask for text only with Options(audio=False)")
        inputs = {}
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise ValueError("text must be a non-empty string")
            prompt = text_prompt(self.tokenizer, text)
        else:
            if not isinstance(audio, (tuple, list)) or len(audio) != 2:
                raise ValueError("audio must be a tuple (wave: np.ndarray, sample_rate: int)")
            wave, sr = audio
            if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
                raise ValueError(f"audio sample rate must be a positive integer, got {sr!r}")
            try:
                w = resample(as_mono(np.asarray(wave)), int(sr), SAMPLE_RATE)
            except WaveError as e:
                raise ValueError(str(e)) from None
            if not np.isfinite(w).all():
                raise ValueError("audio holds NaN or infinite samples")
            feats, mask = log_mel(w, SAMPLE_RATE)  # raises ValueError when shorter than 20 ms
            prompt = audio_prompt(self.tokenizer, n_audio_tokens(feats.shape[1]))
            dtype = next(self.model.thinker.parameters()).dtype
            inputs = {"input_features": feats[None].to(self.device, dtype),
                      "feature_attention_mask": mask[None].to(self.device, torch.long)}
        return Session(self, prompt, inputs, options)

    def warmup(self) -> None:
        """One short session through every part used (thinker, and talker + codec when loaded)."""
        opts = Options(max_new_tokens=12, audio=self.codec is not None, max_audio_seconds=0.5)
        for ev in self.session(text="What is one plus one?", options=opts):
            if isinstance(ev, ErrorEvent):
                raise RuntimeError(f"warmup failed: {ev.message}")


def trailing_silence(wave: np.ndarray, sample_rate: int, run: int = 0, dbfs: float = SILENCE_DBFS) -> int:
    """Samples of silence at the end of the audio once ``wave`` follows audio that ended in ``run``
    silent samples: 10 ms windows whose RMS is below ``dbfs``."""
    win = max(1, sample_rate // 100)
    w = np.asarray(wave, np.float64)
    n = len(w) // win
    if n == 0:
        return run + len(w) if not len(w) or np.sqrt(np.mean(w**2)) < 10 ** (dbfs / 20) else 0
    rms = np.sqrt(np.mean(w[: n * win].reshape(n, win) ** 2, axis=1))
    loud = np.flatnonzero(rms >= 10 ** (dbfs / 20))
    tail = len(w) - n * win  # the last partial window counts with the last whole one
    if not len(loud):
        return run + len(w)
    return (n - 1 - int(loud[-1])) * win + tail


class _Detokenizer:
    """Incremental decoding that never splits a multi-token character: a delta is emitted once the
    window decodes without a trailing replacement character (the prefix/read-offset scheme)."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.parts: list[str] = []

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token: int, final: bool = False) -> str:
        if token is not None:
            self.ids.append(token)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            delta = after[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)
            self.parts.append(delta)
            return delta
        return ""

    def flush(self) -> str:
        return self.push(None, final=True) if self.read < len(self.ids) else ""

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Session:
    """One request. ``step()`` advances one thinker position (plus the talker/codec work that became
    due) and returns its events; ``iter(session)`` steps to the end, which is exactly one
    ``DoneEvent`` or ``ErrorEvent``. ``close()`` frees the caches.

    ``DoneEvent.timings`` (None where not applicable; "positions" are thinker positions after the
    prompt, control tokens included; seconds from the session's creation): ``thinker_positions``,
    ``talker_steps``, ``response_tokens``, ``reasoning_tokens`` (text tokens, pads and eos not
    counted), ``positions_to_first_text`` / ``seconds_to_first_text`` (first response token),
    ``positions_to_first_audio`` / ``talker_steps_to_first_audio`` / ``seconds_to_first_audio``,
    ``audio_seconds``, ``audio_gaps`` (playback from the first chunk at real time: each time the
    next chunk was not there yet), ``seconds`` (total), ``thinker_seconds`` (until the thinker's
    last position) and ``tokens_per_s`` (thinker positions / thinker_seconds).
    """

    def __init__(self, engine: Engine, prompt_ids: list[int], prompt_inputs: dict, options: Options) -> None:
        import torch

        self.engine, self.options = engine, options
        self.prompt_ids = prompt_ids
        self._prompt_inputs = prompt_inputs
        self.done = False
        self._closed = False
        self._t0 = time.perf_counter()
        dev = engine.device
        self._gen = torch.Generator(device=dev).manual_seed(options.seed)
        self._talker_gen = torch.Generator(device=dev).manual_seed(options.seed + TALKER_SEED_OFFSET)
        self._thinker = None  # models.decode.ThinkerState, made by the first step
        self._talker = None  # models.talker.TalkerStream
        self._decoder = None  # models.codec.StreamDecoder
        self._thinker_slot = self._talker_slot = None  # (SlotLM, slot) held in the engine's runner
        self._slot_guard = None  # frees the slots of a session dropped without close()
        self._text = _Detokenizer(engine.tokenizer)
        self._reasoning = _Detokenizer(engine.tokenizer)
        self._frames_sent = 0
        self._samples = 0
        self._seq = 0
        self._arrivals: list[tuple[float, float]] = []  # (seconds since start, chunk seconds)
        self._first_text: tuple[int, float] | None = None
        self._first_audio: tuple[int, int, float] | None = None
        self._talker_steps = 0
        self._positions = 0
        self._thinker_seconds: float | None = None
        self._audio_end: str | None = None  # why the speech ended: eos, silence, audio_length, max_audio_seconds
        self._silent_run = 0  # samples of silence at the end of the decoded audio so far

    # -- public -----------------------------------------------------------------------------------
    def step(self) -> list[Event]:
        """Advance this session alone (``step_all([self])``)."""
        return step_all([self])[0]

    def __iter__(self) -> Iterator[Event]:
        if self._closed:
            raise RuntimeError("this session is closed; start a new one with engine.session(...)")
        while not self.done:
            yield from self.step()

    @property
    def positions(self) -> int:
        """Thinker positions placed so far (after the prompt)."""
        return self._positions

    @property
    def talker_steps(self) -> int:
        """Talker steps taken so far."""
        return self._talker_steps

    @property
    def thinking(self) -> bool:
        """Whether the next ``step()`` places a thinker position (False once the thinker ended and
        only the talker is finishing, one codec frame per step)."""
        return not self.done and (self._thinker is None or not self._thinker.done)

    def close(self) -> None:
        """Free the session's slots now (idempotent); it cannot step again."""
        self._release()
        self._closed = True
        self.done = True

    # -- internals --------------------------------------------------------------------------------
    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _release(self) -> None:
        for lm_slot in (self._thinker_slot, self._talker_slot):
            if lm_slot is not None:
                lm_slot[0].free(lm_slot[1])
        self._thinker_slot = self._talker_slot = None
        if self._slot_guard is not None:
            self._slot_guard.detach()
            self._slot_guard = None
        self._thinker = self._talker = self._decoder = None
        self._prompt_inputs = {}

    def _fail(self, e: Exception) -> list[Event]:
        log.error("session failed: %s: %s", type(e).__name__, e, exc_info=e)
        self._release()
        self.done = True
        return [ErrorEvent(f"{type(e).__name__}: {e}")]

    def _start(self) -> None:
        import weakref

        from models.codec import StreamDecoder
        from models.decode import prefill
        from models.talker import TalkerStream

        e, o = self.engine, self.options
        runner = e.runner
        if runner.talker is not None:
            runner.talker.reclaim()  # slots of sessions dropped without close() (the thinker's: acquire)
        cursor = cursor_for(o.fmt, Schedule(o.speak, o.think), e.ids)
        slot = runner.thinker.acquire()
        self._thinker_slot = (runner.thinker, slot)
        # A session dropped without close() still gives its slots back when it is collected.
        held = [self._thinker_slot]
        self._slot_guard = weakref.finalize(self, _free_slots, held)
        self._thinker = prefill(runner.thinker, self.prompt_ids, cursor, max_new_tokens=o.max_new_tokens,
                                temperature=o.temperature, generator=self._gen, slot=slot, **self._prompt_inputs)
        self._prompt_inputs = {}
        if o.audio:
            c = e.codec
            frames = max(1, int(o.max_audio_seconds * c.frame_rate))
            temp = talker_temperature(e.model) if o.talker_temperature is None else o.talker_temperature
            tslot = runner.talker.acquire()
            self._talker_slot = (runner.talker, tslot)
            held.append(self._talker_slot)  # the guard frees it too
            self._talker = TalkerStream(e.model, c.codebook_sizes, temperature=temp, top_k=TALKER_TOP_K,
                                        generator=self._talker_gen, max_codes=frames * c.codebooks,
                                        lm=runner.talker, slot=tslot)
            self._decoder = StreamDecoder(c)
            if o.min_speech is not None:
                self._talker.min_frames = None  # set when the thinker ends (the response is then known)

    def _after_thinker(self, out) -> list[Event]:
        """Events of one placed thinker position; the position goes to the talker."""
        th, talker, ids = self._thinker, self._talker, self.engine.ids
        events: list[Event] = []
        self._positions += 1
        tok, role = out.token, out.placed.role
        if role is Role.RESPONSE and tok not in (ids.pad, ids.eos):
            if self._first_text is None:
                self._first_text = (out.index + 1, self._now())
            delta = self._text.push(tok)
            if delta:
                events.append(TextEvent(delta, out.index))
        elif role is Role.REASONING and tok != ids.pad:
            delta = self._reasoning.push(tok)
            if delta and self.options.reasoning:
                events.append(ReasoningEvent(delta, out.index, out.placed.block))
        if th.done:
            self._thinker_seconds = self._now()
            if delta := self._text.flush():
                events.append(TextEvent(delta, out.index))
            if (delta := self._reasoning.flush()) and self.options.reasoning:
                events.append(ReasoningEvent(delta, out.index, out.placed.block))
        if talker is not None and not talker.done:
            embed = None
            if role is Role.RESPONSE:
                embed = token_embeddings(self.engine.model.thinker.get_input_embeddings(), self._token_tensor(tok))[0]
            talker.push(role, out.hidden, embed, token=tok)
        return events

    def _after_talker(self, thought: bool, talked: bool) -> list[Event]:
        """After the talker steps of this ``step()``: the speech end rules and the codec on what the
        talker made (when it was due to talk), then the end of the answer."""
        th, talker = self._thinker, self._talker
        events: list[Event] = []
        if talked:
            events += self._talker_rules()
            if thought and th.done:
                talker.finish()  # from now on every step is due: one frame per later step(); the reply is whole
                #   (a number the response ended with is placed only now: talker.numbers)
                if self.options.min_speech is not None:
                    est = self.options.min_speech * speaking_seconds(self._text.text)
                    talker.min_frames = max(talker.text_end_frame, int(est * self.engine.codec.frame_rate))
        if th.done and (talker is None or talker.done):
            events += self._finish()
        return events

    def _token_tensor(self, tok: int):
        import torch

        return torch.tensor([tok], device=self.engine.device)

    def _talker_rules(self) -> list[Event]:
        talker, codec = self._talker, self.engine.codec
        events: list[Event] = []
        self._talker_steps = talker.steps
        if talker.done and self._audio_end is None:
            self._audio_end = "eos" if talker.ended_with_eos else "max_audio_seconds"
        elif not talker.done and talker.thinker_done and self.options.audio_bound is not None:
            budget = self.options.audio_bound * speaking_seconds(self._text.text) + AUDIO_SLACK_S
            # the duration pace: never before the talker has read the whole response (it may hold numbers longer
            # than speaking_seconds says: talker.numbers) and the slack after it
            least = talker.text_end_frame + int(AUDIO_SLACK_S * codec.frame_rate) if talker.pace.by_duration else 0
            if talker.frame >= max(1, int(budget * codec.frame_rate), least):
                talker.stop()  # the response's length in speech is spent: a talker that never says eos
                self._audio_end = "audio_length"
        frames = len(talker.codes) // codec.codebooks
        if frames > self._frames_sent:
            ids = talker.codes[self._frames_sent * codec.codebooks : frames * codec.codebooks]
            self._frames_sent = frames
            events += self._audio(self._decoder.push(codec.unflatten(ids)))
            end = self.options.end_silence_seconds
            if end is not None and not talker.done:
                heard_all = talker.thinker_done and talker.frame > talker.text_end_frame  # read the text eos
                if self._silent_run >= (end if heard_all else 2 * end) * codec.sample_rate:
                    talker.stop()  # the speech has ended (or is stuck in a pause)
                    self._audio_end = "silence"
        if talker.done and not self._decoder.finished:
            events += self._audio(self._decoder.flush())
        return events

    def _audio(self, wave: np.ndarray) -> list[Event]:
        from models.wave import to_pcm16

        if not len(wave):
            return []
        sr = self.engine.codec.sample_rate
        self._silent_run = trailing_silence(wave, sr, self._silent_run)
        ev = AudioEvent(to_pcm16(wave), sr, self._seq, self._samples)
        now = self._now()
        if self._first_audio is None:
            self._first_audio = (len(self._thinker.generated), self._talker_steps, now)
        self._arrivals.append((now, len(wave) / sr))
        self._seq += 1
        self._samples += len(wave)
        return [ev]

    def _gaps(self) -> int:
        """Playback from the first chunk at real time: count each time the next chunk is not there yet."""
        gaps, play = 0, None
        for arrival, seconds in self._arrivals:
            if play is None:
                play = arrival
            elif arrival > play:
                gaps += 1
                play = arrival  # playback resumes when the chunk arrives
            play += seconds
        return gaps

    def _finish(self) -> list[Event]:
        th, o = self._thinker, self.options
        positions = len(th.generated)
        seconds = self._now()
        audio = self._talker is not None
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        ft, fa = self._first_text, self._first_audio
        timings = {
            "thinker_positions": positions,
            "talker_steps": self._talker_steps if audio else None,
            "response_tokens": len(self._text.ids),
            "reasoning_tokens": len(self._reasoning.ids),
            "positions_to_first_text": ft[0] if ft else None,
            "seconds_to_first_text": r(ft[1]) if ft else None,
            "positions_to_first_audio": fa[0] if fa else None,
            "talker_steps_to_first_audio": fa[1] if fa else None,
            "seconds_to_first_audio": r(fa[2]) if fa else None,
            "audio_seconds": r(self._samples / self.engine.codec.sample_rate) if audio else None,
            "audio_gaps": self._gaps() if audio else None,
            "seconds": r(seconds),
            # thinker positions per second while the thinker ran (its share of talker/codec work included)
            "thinker_seconds": r(self._thinker_seconds),
            "tokens_per_s": r(positions / self._thinker_seconds) if self._thinker_seconds else None,
        }
        reason = "eos" if th.cursor.done else "max_new_tokens"
        if reason == "eos" and self._audio_end in ("max_audio_seconds", "audio_length"):
            reason = self._audio_end  # the text ended, but a cap cut the speech
        done = DoneEvent(self._text.text, self._reasoning.text, timings, reason, self._audio_end)
        self._release()
        self.done = True
        return [done]


def _free_slots(held: list) -> None:
    for lm, slot in held:
        lm.free_later(slot)  # maybe on the garbage collector's thread: the runner frees it on its own


def step_all(sessions: Sequence[Session]) -> list[list[Event]]:
    """Advance every session by one ``step()``, together: one batched thinker forward for all that are
    thinking, then batched talker steps (one forward per step for all whose talker has work due), then
    each session's codec and events. Returns each session's events, in order. A session's events are
    exactly what stepping it alone gives (the slots share nothing; each samples from its own
    generators). A failure fails the sessions whose work failed (an ``ErrorEvent`` each), never the
    caller; a closed session is an error, a done one gets ``[]``."""
    import torch

    import models.decode
    import models.talker

    out: list[list[Event]] = [[] for _ in sessions]
    for s in sessions:
        if s._closed:
            raise RuntimeError("this session is closed; start a new one with engine.session(...)")
    engines = {id(s.engine) for s in sessions}
    if len(engines) > 1:
        raise ValueError("step_all steps sessions of one engine (one runner) at a time")
    live = [i for i, s in enumerate(sessions) if not s.done]

    def fail(rows: list[int], e: Exception) -> None:
        for i in rows:
            out[i] += sessions[i]._fail(e)

    with torch.inference_mode():
        for i in live:
            if sessions[i]._thinker is None:
                try:
                    sessions[i]._start()
                except Exception as e:  # one request failing must not take the caller down
                    fail([i], e)
        live = [i for i in live if not sessions[i].done]
        thinking = [i for i in live if not sessions[i]._thinker.done]
        thought = set(thinking)
        if thinking:
            try:
                steps = models.decode.step_batch([sessions[i]._thinker for i in thinking],
                                                 [sessions[i]._talker is not None for i in thinking])
            except Exception as e:
                fail(thinking, e)
                steps = []
            for i, st in zip(thinking, steps):
                try:
                    out[i] += sessions[i]._after_thinker(st)
                except Exception as e:
                    fail([i], e)
        live = [i for i in live if not sessions[i].done]
        # Talker work due this step: everything the new position made due while thinking; one frame
        # per step once the thinker has ended.
        talked = {i for i in live if sessions[i]._talker is not None and (i not in thought or not sessions[i]._talker.done)}
        limit = {i: None if i in thought else sessions[i]._talker.steps_per_frame for i in talked}
        taken = dict.fromkeys(talked, 0)
        while True:
            due = [i for i in talked if not sessions[i].done and sessions[i]._talker.ready()
                   and (limit[i] is None or taken[i] < limit[i])]
            if not due:
                break
            try:
                models.talker.step_batch([sessions[i]._talker for i in due])
            except Exception as e:
                fail(due, e)
            for i in due:
                taken[i] += 1
        for i in live:
            if sessions[i].done:
                continue
            try:
                out[i] += sessions[i]._after_talker(i in thought, i in talked)
            except Exception as e:
                fail([i], e)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Stream one answer as JSON lines (audio written to --out).")
    ap.add_argument("model_dir", help="checkpoint directory with model/ and tokenizer/")
    ap.add_argument("--codec", default=None, help="codec stage output (codec.json ...); omit for text only")
    q = ap.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="the question as text")
    q.add_argument("--wav", help="the question as an audio file")
    ap.add_argument("--fmt", default="tis", choices=["tis", "think_first"])
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the spoken answer to this WAV file")
    args = ap.parse_args(argv)

    engine = Engine.load(args.model_dir, args.codec)
    opts = Options(fmt=args.fmt, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                   audio=args.codec is not None)
    if args.wav:
        import soundfile as sf

        wave, sr = sf.read(args.wav, dtype="float32", always_2d=False)
        session = engine.session(audio=(wave, sr), options=opts)
    else:
        session = engine.session(text=args.text, options=opts)
    pcm = []
    for ev in session:
        if isinstance(ev, AudioEvent):
            pcm.append(ev.pcm16)
            continue
        print(json.dumps(ev.to_dict()), flush=True)
    if args.out and pcm:
        from models.atomic import write_with
        from models.wave import from_pcm16

        import soundfile as sf

        write_with(args.out, lambda t: sf.write(str(t), from_pcm16(b"".join(pcm)), engine.sample_rate,
                                               format="WAV"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
