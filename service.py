"""The streaming speech service: a spoken or typed question in, Server-Sent Events out (spoken text,
audio chunks, and the silent reasoning when asked), a page at ``/`` that plays and shows them.

    bentoml serve omni-tis:latest                       # the Bento `python -m tasks.package` built
    OMNI_TIS_MODEL_DIR=DIR bentoml serve service:OmniTiS  # from source: DIR laid out by tasks.package.assemble
    curl -N http://127.0.0.1:3000/v1/stream -H 'Content-Type: application/json' \\
         -d '{"text": "What is 3 plus 4?", "options": {"show_reasoning": true}}'
    curl -N http://127.0.0.1:3000/v1/stream -F audio=@question.wav -F 'options={"seed": 1}'

Routes (a FastAPI app mounted with ``@bentoml.asgi_app``, so the stream is real ``text/event-stream``):

    GET  /                 the page (web/index.html + web/app.js; no external assets)
    POST /v1/stream        SSE: start, then text / reasoning / audio events in model order, then done | error
    POST /v1/answer        the same, non-streamed: JSON with the answer, timings and a base64 WAV
    GET  /v1/health        model, device, sessions active / waiting / served / cancelled / failed
    GET  /openapi.json     the schema of the routes above; BentoML adds /livez, /readyz, /metrics

A request body is JSON ``{"text" | "audio" (base64 wav/flac/ogg/mp3), "options"}`` or a multipart form
with the fields ``audio`` (file) or ``text``, and ``options`` (a JSON object). Options: ``speak``,
``think`` (the schedule, default the model's), ``max_new_tokens``, ``temperature``, ``seed``,
``show_reasoning``, ``audio``; anything else is refused. Limits come from ``serve:`` in params.yaml
(``OMNI_TIS_PARAMS`` names another file); when the env var named by ``serve.token_env`` is set, the API
wants ``Authorization: Bearer <token>``.

Concurrency: one thread owns the model and steps every admitted session in turn, one thinker
position each (``serve.max_active`` at once, the rest wait in line, ``serve.max_queue`` of them);
sessions share no state (models/session.py), so interleaving never mixes their outputs, and the event
loop only moves bytes. A client that goes away has its session closed at the thread's next turn.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hmac
import io
import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import bentoml
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.core.params import load_params

log = logging.getLogger("bentoml.omni_tis")  # under "bentoml": its server logs it

HERE = Path(__file__).resolve().parent
WEB = HERE / "web"
PARAMS_ENV = "OMNI_TIS_PARAMS"  # another params.yaml (tests: small limits)
MODEL_DIR_ENV = "OMNI_TIS_MODEL_DIR"  # serve a packaged model directory instead of the model store's
MODEL_ENV = "OMNI_TIS_MODEL"  # the model store tag when no build argument pins it
AUDIO_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}

_PARAMS = load_params(os.environ.get(PARAMS_ENV) or HERE / "params.yaml")
SERVE = _PARAMS.serve
# `python -m tasks.package` builds with `--arg model=<name>:<version>`, so a Bento serves exactly the
# model it was built with (BentoML keeps build arguments in the Bento).
MODEL_TAG = (getattr(bentoml.use_arguments(), "model", None) or os.environ.get(MODEL_ENV)
             or f"{_PARAMS.package.model_name}:latest")


# ------------------------------------------------------------------------------------------- requests
class AskOptions(BaseModel):
    """Per-request options. Unknown keys and wrong types are refused (422), as are values past the
    service's limits (params.yaml ``serve:``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    speak: int | None = Field(None, ge=1, le=SERVE.max_schedule,
                              description="response tokens per block (default: the model's schedule)")
    think: int | None = Field(None, ge=1, le=SERVE.max_schedule,
                              description="reasoning tokens per block (default: the model's schedule)")
    max_new_tokens: int = Field(SERVE.default_max_new_tokens, ge=1, le=SERVE.max_new_tokens,
                                description="thinker positions after the prompt")
    temperature: float = Field(0.0, ge=0.0, le=SERVE.max_temperature, description="0 = greedy")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="same seed, same answer")
    show_reasoning: bool = Field(False, description="stream the silent reasoning too")
    audio: bool = Field(True, description="speak the answer (false: text only)")


class AskJSON(BaseModel):
    """A JSON request: exactly one of ``text`` or ``audio`` (a base64 wav/flac/ogg/mp3 file)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = Field(None, min_length=1, max_length=SERVE.max_text_chars, description="the question")
    audio: str | None = Field(None, min_length=1, description="base64 of a wav, flac, ogg or mp3 file")
    options: AskOptions = Field(default_factory=AskOptions)


class AskForm(BaseModel):
    """The multipart form (documentation only; the route parses it itself to answer bad input with 4xx)."""

    model_config = ConfigDict(extra="forbid")
    audio: bytes | None = Field(None, json_schema_extra={"format": "binary"}, description="wav/flac/ogg/mp3 file")
    text: str | None = Field(None, max_length=SERVE.max_text_chars)
    options: str | None = Field(None, description="a JSON object of options, as in the JSON body")


class Answer(BaseModel):
    """``/v1/answer``: the whole answer at once (the stream's ``done`` event plus the audio)."""

    request_id: str
    answer: str | None = Field(description="the number after 'The answer is' (else the last number), or null")
    response: str = Field(description="the spoken text")
    reasoning: str | None = Field(description="the silent reasoning (null unless show_reasoning)")
    finish_reason: str = Field(description="eos | max_new_tokens | max_audio_seconds | audio_length (a cap cut the speech)")
    audio_end: str | None = Field(None, description="why the speech ended: eos | silence | audio_length | max_audio_seconds")
    timings: dict[str, Any]
    sample_rate: int | None
    audio_seconds: float
    wav: str | None = Field(description="base64 of a PCM16 mono WAV file (null when audio is off)")


class Health(BaseModel):
    status: str
    ready: bool
    model: str
    device: str
    sample_rate: int | None
    schedule: dict[str, int]
    max_active: int
    active: int
    waiting: int
    served: int
    cancelled: int
    failed: int
    rejected: int


@dataclass
class Question:
    text: str | None
    audio: tuple[np.ndarray, int] | None
    options: AskOptions
    source: str  # "text", or the audio's container ("wav", "mp3", ...)


def _bad(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _explain(e: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in e.errors():
        where = prefix + ".".join(str(x) for x in err["loc"])
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def decode_audio(data: bytes) -> tuple[np.ndarray, int, str]:
    """An uploaded file -> ``(wave (samples,) or (samples, channels) float32, sample rate, format)``;
    an ``HTTPException`` with a 4xx that says what is wrong otherwise."""
    import soundfile as sf

    if not data:
        raise _bad(422, "the audio is empty (0 bytes); send a wav, flac, ogg or mp3 file")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            kind = AUDIO_FORMATS.get(f.format)
            if kind is None:
                raise _bad(415, f"audio format {f.format} is not accepted; send wav, flac, ogg or mp3")
            sr, frames = f.samplerate, f.frames
            if not SERVE.min_sample_rate <= sr <= SERVE.max_sample_rate:
                raise _bad(422, f"sample rate {sr} Hz is outside [{SERVE.min_sample_rate}, {SERVE.max_sample_rate}] Hz")
            if frames > SERVE.max_input_seconds * sr:
                raise _bad(413, f"the audio lasts {frames / sr:.1f} s; at most {SERVE.max_input_seconds:g} s")
            wave = f.read(dtype="float32", always_2d=False)
    except HTTPException:
        raise
    except Exception as e:  # libsndfile's errors (corrupt, truncated, not audio) carry no common type
        why = str(e).split(">: ", 1)[-1]  # drop "Error opening <_io.BytesIO object at 0x...>: "
        raise _bad(422, f"could not decode the audio as wav, flac, ogg or mp3: {why}") from None
    if wave.shape[0] == 0:
        raise _bad(422, "the audio holds no samples")
    if not np.isfinite(wave).all():
        raise _bad(422, "the audio holds NaN or infinite samples")
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    level = 20 * np.log10(rms) if rms > 0 else -np.inf
    if level < SERVE.silence_dbfs:
        raise _bad(422, f"the audio is silent (level {level:.0f} dBFS, below serve.silence_dbfs "
                        f"{SERVE.silence_dbfs:g}); record the question again")
    return wave, sr, kind


async def _read_body(request: Request) -> bytes:
    limit = int(SERVE.max_body_mb * 2**20)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _bad(413, f"the request body is {int(declared)} bytes; at most {limit} (serve.max_body_mb)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _bad(413, f"the request body is over {limit} bytes (serve.max_body_mb)")
    return bytes(body)


def _options(raw: Any, where: str) -> AskOptions:
    if raw is None:
        return AskOptions()
    try:
        return AskOptions.model_validate(raw)
    except ValidationError as e:
        raise _bad(422, _explain(e, f"{where}.")) from None


async def parse_question(request: Request) -> Question:
    """The request body (JSON or multipart) -> a validated question, or a 4xx."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "multipart/form-data"):
        raise _bad(415, f"content type {ctype or '(none)'!r} is not accepted; send application/json "
                        "({\"text\": ...} or {\"audio\": base64}) or multipart/form-data (audio file or text)")
    body = await _read_body(request)
    if ctype == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise _bad(400, f"the body is not valid JSON: {e}") from None
        try:
            ask = AskJSON.model_validate(data)
        except ValidationError as e:
            raise _bad(422, _explain(e)) from None
        text, options = ask.text, ask.options
        audio = None
        if ask.audio is not None:
            try:
                audio = base64.b64decode(ask.audio, validate=True)
            except (binascii.Error, ValueError):
                raise _bad(422, "audio: not valid base64") from None
    else:
        text, audio, options = await _parse_form(request, body)
    if (text is None) == (audio is None):
        raise _bad(422, "send exactly one of text (the question) or audio (a wav, flac, ogg or mp3 file)")
    if text is not None:
        if not text.strip():
            raise _bad(422, "text is blank")
        if len(text) > SERVE.max_text_chars:
            raise _bad(422, f"text has {len(text)} characters; at most {SERVE.max_text_chars} (serve.max_text_chars)")
        return Question(text, None, options, "text")
    wave, sr, kind = await asyncio.to_thread(decode_audio, audio)
    return Question(None, (wave, sr), options, kind)


async def _parse_form(request: Request, body: bytes) -> tuple[str | None, bytes | None, AskOptions]:
    from starlette.datastructures import UploadFile

    sent = False

    async def replay() -> dict:  # the body was read (with its size limit) already
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=2, max_fields=16, max_part_size=len(body) + 1)
    except HTTPException as e:
        raise _bad(400, f"malformed multipart form: {e.detail}") from None
    except Exception as e:  # python-multipart's parse errors
        raise _bad(400, f"malformed multipart form: {e}") from None
    unknown = sorted(set(form.keys()) - {"audio", "text", "options"})
    if unknown:
        raise _bad(422, f"unknown form fields {unknown}; send audio (file) or text, and options (JSON)")
    twice = sorted(k for k in ("audio", "text", "options") if len(form.getlist(k)) > 1)
    if twice:
        raise _bad(422, f"form fields {twice} sent more than once; send each at most once")
    a, t, o = form.get("audio"), form.get("text"), form.get("options")
    audio = None
    if a is not None:
        if not isinstance(a, UploadFile):
            raise _bad(422, "audio must be a file part (curl -F audio=@question.wav)")
        audio = await a.read()
    if isinstance(t, UploadFile) or isinstance(o, UploadFile):
        raise _bad(422, "text and options are plain form fields, not files")
    raw = None
    if o is not None:
        try:
            raw = json.loads(o)
        except ValueError as e:
            raise _bad(422, f"options: not a JSON object: {e}") from None
        if not isinstance(raw, dict):
            raise _bad(422, "options: must be a JSON object")
    return t, audio, _options(raw, "options")


# ------------------------------------------------------------------------------------------- the model
@dataclass(eq=False)
class Job:
    """One request's place in the scheduler; events cross to the event loop through ``queue``."""

    id: str
    session: Any  # models.session.Session
    loop: asyncio.AbstractEventLoop
    speaks: bool = True  # False: a text-only answer (no audio to keep ahead of)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    cancelled: bool = False
    state: str = "waiting"  # waiting -> active -> done | cancelled | failed
    audio_seconds: float = 0.0  # audio produced so far
    first_audio: float | None = None  # when its first chunk was produced
    last_turn: int = -1  # the scheduler's step counter when this job last stepped

    def ahead(self, now: float) -> float:
        """Seconds of audio the listener has in hand beyond real-time playback (from the first chunk
        on); minus infinity while the first chunk is still coming, 0 for a text-only answer."""
        if not self.speaks:
            return 0.0
        if self.first_audio is None:
            return -math.inf
        return self.audio_seconds - (now - self.first_audio)

    def put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (shutdown): nobody is listening
            self.cancelled = True


class Busy(Exception):
    """The line is full (serve.max_queue)."""


class Scheduler:
    """One thread owns the model and steps one session at a time, always the one whose listener is
    closest to running out of audio (least audio in hand beyond real time; an answer still on its way to
    its first chunk comes first; ties go to the least recently stepped). A waiting request is admitted
    while fewer than ``max_active`` run and every running answer has at least ``admit_ahead_s`` of audio
    in hand: requests the model cannot keep in real time wait in line instead of making every
    listener stutter. ``admit_ahead_s=0`` admits at once up to ``max_active`` (plain interleaving);
    ``max_active=1`` is one session at a time (moshi's lock)."""

    def __init__(self, max_active: int, max_queue: int, admit_ahead_s: float = 0.0) -> None:
        self.max_active, self.max_queue, self.admit_ahead_s = max_active, max_queue, admit_ahead_s
        self._cv = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._stop = False
        self._turn = 0
        self.counts = {"served": 0, "cancelled": 0, "failed": 0, "rejected": 0}
        self._thread = threading.Thread(target=self._run, name="omni-tis-model", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> int:
        """Queue ``job``; returns how many wait before it. Raises ``Busy`` when the line is full."""
        with self._cv:
            ahead = len(self._waiting)
            if ahead >= self.max_queue and not self._admissible(time.perf_counter()):
                self.counts["rejected"] += 1
                raise Busy(f"{len(self._active)} answers are running and {ahead} wait; try again shortly")
            self._waiting.append(job)
            self._cv.notify()
            return ahead

    def cancel(self, job: Job) -> None:
        """Stop ``job`` (a client went away): a waiting job leaves the line now, an active one is closed
        by the model thread before its next step. No-op for a finished job."""
        with self._cv:
            if job.state == "waiting" and job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, "cancelled")
            elif job.state == "active":
                job.cancelled = True
                self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            for job in list(self._waiting) + self._active:
                job.cancelled = True
            self._cv.notify()
        self._thread.join(timeout=10)

    def _admissible(self, now: float) -> bool:  # holding self._cv
        if len(self._active) >= self.max_active:
            return False
        return self.admit_ahead_s <= 0 or all(j.ahead(now) >= self.admit_ahead_s for j in self._active)

    def _finish(self, job: Job, state: str) -> None:  # holding self._cv
        job.session.close()
        job.state = state
        self.counts["served" if state == "done" else state] += 1
        job.put(None)

    def _next(self) -> Job | None:
        """Admit who may start, drop the cancelled, pick who steps; None when stopping."""
        with self._cv:
            while True:
                if self._stop:
                    for job in list(self._waiting) + self._active:
                        self._finish(job, "cancelled")
                    self._waiting.clear()
                    self._active.clear()
                    return None
                for job in [j for j in self._active if j.cancelled]:
                    self._active.remove(job)
                    self._finish(job, "cancelled")
                now = time.perf_counter()
                while self._waiting and self._admissible(now):
                    job = self._waiting.popleft()
                    job.state, job.started = "active", now
                    self._active.append(job)
                if self._active:
                    return min(self._active, key=lambda j: (j.ahead(now), j.last_turn))
                self._cv.wait()

    def _run(self) -> None:
        while (job := self._next()) is not None:
            events = job.session.step()  # never raises: a failure is an ErrorEvent
            self._turn += 1
            job.last_turn = self._turn
            for ev in events:
                if ev.type == "audio":
                    job.first_audio = job.first_audio or time.perf_counter()
                    job.audio_seconds += ev.seconds
            if events:
                job.put(events)
                time.sleep(0)  # hand the GIL to the event loop now, so it sends these at once
            if job.session.done:
                failed = any(ev.type == "error" for ev in events)
                with self._cv:
                    self._active.remove(job)
                    self._finish(job, "failed" if failed else "done")


class Runtime:
    """The loaded engine, its model thread and the model's manifest (what `tasks.package` wrote)."""

    def __init__(self, model_dir: str | Path, tag: str) -> None:
        from models.session import Engine

        d = Path(model_dir)
        manifest = d / "omni_tis.json"
        if not manifest.exists():
            raise FileNotFoundError(f"{d} is not a packaged omni-tis model (no omni_tis.json); build one with "
                                    "`python -m tasks.package` or tasks.package.assemble(...)")
        self.manifest = json.loads(manifest.read_text())
        self.tag = tag
        codec = d / "codec"
        self.engine = Engine.load(d, codec if (codec / "codec.json").exists() else None)
        self.schedule = {"speak": int(self.manifest["schedule"]["speak"]),
                         "think": int(self.manifest["schedule"]["think"])}
        self.fmt = self.manifest.get("format", "tis")
        self.engine.warmup()
        self._warm_spoken()
        self.scheduler = Scheduler(SERVE.max_active, SERVE.max_queue, SERVE.admit_ahead_s)
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
        """A session for ``q`` (features computed here, off the event loop); ValueError -> 422."""
        opts = self.session_options(q.options)
        if q.text is not None:
            return self.engine.session(text=q.text, options=opts)
        return self.engine.session(audio=q.audio, options=opts)


# ----------------------------------------------------------------------------------------------- web
app = FastAPI(
    title="omni-tis",
    version="1",
    description="Thinking-in-speaking speech model: streamed spoken answers (Server-Sent Events) with "
                "optional silent reasoning. See the module docstring of service.py.",
    docs_url=None,  # Swagger UI loads its assets from a CDN; the schema stays at /openapi.json
    redoc_url=None,
)

_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/AskJSON"}},
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/AskForm"}},
    },
}
_ERRORS = {code: {"description": what, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}}}}
    for code, what in [(400, "malformed body"), (401, "missing or wrong bearer token"),
                       (413, "body, audio or text over the limit"), (415, "content type or audio format not accepted"),
                       (422, "invalid question or options"), (503, "busy or not ready")]}


def _openapi() -> dict:
    """FastAPI's schema plus the request bodies the routes parse themselves (JSON or multipart)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (AskJSON, AskForm):
            s = model.model_json_schema(ref_template="#/components/schemas/{model}")
            comps.update(s.pop("$defs", {}))
            comps[model.__name__] = s
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = _openapi


def _token() -> str:
    return os.environ.get(SERVE.token_env, "") if SERVE.token_env else ""


def _authorized(request: Request) -> None:
    token = _token()
    if not token:
        return
    got = request.headers.get("authorization", "")
    scheme, _, value = got.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise HTTPException(401, "this service wants `Authorization: Bearer <token>` "
                                 f"(the value of ${SERVE.token_env} where it runs)",
                            headers={"WWW-Authenticate": "Bearer"})


def _sse(event: str, data: dict) -> bytes:
    # One `data:` line per event: json.dumps escapes newlines.
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


class _Stream(StreamingResponse):
    """Closes the job however the response ends (done, client gone, server stopping)."""

    def __init__(self, content, job: Job, scheduler: Scheduler, **kw) -> None:
        super().__init__(content, **kw)
        self._job, self._scheduler = job, scheduler

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._scheduler.cancel(self._job)


def _done_payload(ev, job: Job, t0: float, firsts: dict, show_reasoning: bool) -> dict:
    from models.drift import answer_of

    d = ev.to_dict()
    d["answer"] = answer_of(ev.response)
    if not show_reasoning:
        d["reasoning"] = None
    now = time.perf_counter()
    r = lambda x: None if x is None else round(x, 4)  # noqa: E731
    # Seen from the request's arrival (upload, decoding and waiting in line included).
    d["timings"]["request"] = {
        "setup_seconds": r(job.submitted - t0),  # reading, checking and decoding the question
        "queue_seconds": r((job.started or now) - job.submitted),
        "seconds_to_first_text": r(firsts.get("text") and firsts["text"] - t0),
        "seconds_to_first_audio": r(firsts.get("audio") and firsts["audio"] - t0),
        "seconds": r(now - t0),
    }
    return d


async def _start(svc: "OmniTiS", request: Request) -> tuple[Job, float, Question, int]:
    t0 = time.perf_counter()
    q = await parse_question(request)
    rt = svc.runtime
    try:
        session = await asyncio.to_thread(rt.new_session, q)
    except ValueError as e:
        raise _bad(422, str(e)) from None
    job = Job(uuid.uuid4().hex[:12], session, asyncio.get_running_loop(), speaks=session.options.audio)
    try:
        ahead = rt.scheduler.submit(job)
    except Busy as e:
        session.close()
        raise HTTPException(503, str(e), headers={"Retry-After": "2"}) from None
    log.info("request %s: %s question, options %s, %d ahead", job.id, q.source,
             q.options.model_dump(exclude_defaults=True), ahead)
    return job, t0, q, ahead


async def _events(job: Job, deadline: float) -> AsyncIterator[Any]:
    """The job's events as they come; ``None`` items are keepalive ticks while nothing arrives."""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError
        try:
            batch = await asyncio.wait_for(job.queue.get(), timeout=min(SERVE.keepalive_s, left))
        except asyncio.TimeoutError:
            yield None
            continue
        if batch is None:
            return
        for ev in batch:
            yield ev


@bentoml.service(
    name="omni_tis",
    workers=1,  # one model copy; its thread interleaves the sessions
    resources={"gpu": 1} if SERVE.gpus else {},
    traffic={"timeout": SERVE.timeout_s},
    http={"host": SERVE.host, "port": SERVE.port},
)
@bentoml.asgi_app(app, path="/")
class OmniTiS:
    """Loads the packaged model once, warms it up, and serves the routes above."""

    if not os.environ.get(MODEL_DIR_ENV):  # BentoML resolves class-scope models at build and at serve
        bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        model_dir = os.environ.get(MODEL_DIR_ENV)
        tag = f"dir:{model_dir}"
        if not model_dir:
            stored = self.bento_model
            model_dir, tag = stored.path, str(stored.tag)
        t = time.perf_counter()
        self.runtime = Runtime(model_dir, tag)
        e = self.runtime.engine
        log.info("omni-tis: %s on %s, ready in %.1fs (max_active %d, max_queue %d)", tag, e.device,
                 time.perf_counter() - t, SERVE.max_active, SERVE.max_queue)

    def __is_ready__(self) -> bool:
        return self.runtime is not None and self.runtime.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        if self.runtime is not None:
            self.runtime.scheduler.close()

    # -- page ------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page(self) -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/app.js", include_in_schema=False)
    def page_script(self) -> FileResponse:
        return FileResponse(WEB / "app.js", media_type="text/javascript")

    # -- API -------------------------------------------------------------------------------------
    @app.get("/v1/health", response_model=Health, summary="Model, device and sessions")
    def health(self) -> Health:
        rt = self.runtime
        if rt is None:
            raise _bad(503, "the model is still loading")
        s = rt.scheduler
        return Health(status="ok", ready=rt.ready, model=rt.tag, device=str(rt.engine.device),
                      sample_rate=rt.engine.sample_rate, schedule=rt.schedule, max_active=s.max_active,
                      active=s.active, waiting=s.waiting, **s.counts)

    @app.post("/v1/stream", summary="Ask; stream the spoken answer as Server-Sent Events",
              dependencies=[Depends(_authorized)], openapi_extra={"requestBody": _BODY},
              responses={200: {"description": "`event: start|text|reasoning|audio|done|error` frames, each with "
                                              "one JSON `data:` line", "content": {"text/event-stream": {}}},
                         **_ERRORS})
    async def stream(self, request: Request) -> StreamingResponse:
        job, t0, q, ahead = await _start(self, request)
        rt, opts = self.runtime, q.options
        deadline = t0 + SERVE.timeout_s

        async def frames() -> AsyncIterator[bytes]:
            firsts: dict[str, float] = {}
            yield _sse("start", {"type": "start", "request_id": job.id, "queued": ahead, "sample_rate":
                                 rt.engine.sample_rate if opts.audio else None,
                                 "schedule": {"speak": opts.speak or rt.schedule["speak"],
                                              "think": opts.think or rt.schedule["think"]},
                                 "options": opts.model_dump()})
            try:
                async for ev in _events(job, deadline):
                    if ev is None:
                        yield b": keepalive\n\n"
                        continue
                    firsts.setdefault(ev.type, time.perf_counter())
                    if ev.type == "done":
                        yield _sse("done", _done_payload(ev, job, t0, firsts, opts.show_reasoning))
                    else:
                        yield _sse(ev.type, ev.to_dict())
            except TimeoutError:
                yield _sse("error", {"type": "error", "message": f"the answer took over serve.timeout_s "
                                                                 f"({SERVE.timeout_s:g} s) and was stopped"})

        return _Stream(frames(), job, rt.scheduler, media_type="text/event-stream",
                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-Id": job.id})

    @app.post("/v1/answer", response_model=Answer, summary="Ask; the whole answer at once (JSON + WAV)",
              dependencies=[Depends(_authorized)], openapi_extra={"requestBody": _BODY}, responses=_ERRORS)
    async def answer(self, request: Request) -> Answer:
        job, t0, q, _ = await _start(self, request)
        rt = self.runtime
        pcm: list[bytes] = []
        firsts: dict[str, float] = {}
        done = None
        try:
            async for ev in _events(job, t0 + SERVE.timeout_s):
                if ev is None:
                    if await request.is_disconnected():
                        break
                    continue
                firsts.setdefault(ev.type, time.perf_counter())
                if ev.type == "audio":
                    pcm.append(ev.pcm16)
                elif ev.type == "error":
                    raise HTTPException(500, f"the model failed: {ev.message}")
                elif ev.type == "done":
                    done = _done_payload(ev, job, t0, firsts, q.options.show_reasoning)
        except TimeoutError:
            raise HTTPException(504, f"the answer took over serve.timeout_s ({SERVE.timeout_s:g} s)") from None
        finally:
            rt.scheduler.cancel(job)
        if done is None:
            raise HTTPException(499, "client closed the request")
        sr = rt.engine.sample_rate if q.options.audio else None
        data = b"".join(pcm)
        return Answer(request_id=job.id, answer=done["answer"], response=done["response"],
                      reasoning=done["reasoning"], finish_reason=done["finish_reason"],
                      audio_end=done.get("audio_end"), timings=done["timings"],
                      sample_rate=sr, audio_seconds=round(len(data) / 2 / sr, 4) if sr else 0.0,
                      wav=base64.b64encode(_wav(data, sr)).decode("ascii") if sr else None)


def _wav(pcm16: bytes, sr: int) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm16)
    return buf.getvalue()


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
