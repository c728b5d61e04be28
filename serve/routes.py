"""The routes: a FastAPI app that ``service.py`` mounts with ``@bentoml.asgi_app`` (so the stream is real
``text/event-stream``). The loaded model reaches them as ``app.state.runtime`` (set by the service once
it has loaded; until then the API answers 503).

    GET  /                 the page (web/index.html + web/app.js; no external assets)
    POST /v1/stream        SSE: start, then text / reasoning / audio events in model order, then done | error
    POST /v1/answer        the same, non-streamed: JSON with the answer, timings and a base64 WAV
    GET  /v1/health        liveness; with the bearer token (or none set) also model, device, sessions
    GET  /openapi.json     the schema of the routes above; BentoML adds /livez, /readyz, /metrics

When the env var named by ``serve.token_env`` is set, the API wants ``Authorization: Bearer <token>``.
Every error is JSON ``{"detail": ...}`` (serve/errors.py).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
import os
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from serve import errors
from serve.config import SERVE, WEB
from serve.requests import AskForm, AskJSON, Question, bad, parse_question
from serve.runtime import Runtime
from serve.scheduler import Busy, Job, Scheduler, retry_after

log = logging.getLogger("bentoml.omni_tis")  # under "bentoml": its server logs it


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


class Liveness(BaseModel):
    """``/v1/health`` without the bearer token, when one is set: alive and ready, nothing more."""

    status: str
    ready: bool


class Health(Liveness):
    """``/v1/health`` with the token (or when none is set): the model, the device and the scheduler."""

    model: str
    device: str
    sample_rate: int | None
    schedule: dict[str, int]
    max_active: int
    admit_ahead_s: float = Field(description="0: max_active answers run at once; > 0: another starts only while "
                                             "every running spoken answer has this much audio in hand")
    slot_seconds: float | None = Field(description="mean seconds recent answers held a slot (estimates waits)")
    held_for_audio: bool = Field(description="a request waits although a slot is free: admit_ahead_s holds it "
                                             "until the running answers have audio in hand")
    active: int
    waiting: int
    served: int
    cancelled: int
    failed: int
    rejected: int


app = FastAPI(
    title="omni-tis",
    version="1",
    description="Thinking-in-speaking speech model: streamed spoken answers (Server-Sent Events) with "
                "optional silent reasoning. See the module docstrings of service.py and serve/.",
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
_ERROR_BODY = {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds until a place is likely free, from the measured queue",
                                "schema": {"type": "integer", "minimum": 1}}}
_ERRORS = {code: {"description": what, "content": _ERROR_BODY, **({"headers": _RETRY_AFTER} if code == 503 else {})}
           for code, what in [
               (400, "malformed body: not JSON, not a multipart form, or JSON nested deeper than 8 levels"),
               (401, "missing or wrong bearer token"),
               (408, "the upload stalled for serve.body_timeout_s (the connection closes)"),
               (413, "body over serve.max_body_mb, audio over serve.max_input_seconds or text over "
                     "serve.max_text_chars"),
               (415, "content type or audio format not accepted"),
               (422, "invalid question or options (unknown key, wrong type, out of range, silent audio, ...)"),
               (500, "a fault in the service (a bug: every bad input gets a 4xx)"),
               (503, "the line is full (serve.max_queue) or the model is still loading; see Retry-After")]}


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


def _has_token(request: Request) -> bool:
    """True when no token is set, or the request carries it."""
    token = _token()
    if not token:
        return True
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


# The dependencies and /v1/health are `async def`: FastAPI runs a plain `def` on a worker thread, a hop
# there and back per request (each a thread wake-up, and a GIL hand-off with the model thread).
async def _authorized(request: Request) -> None:
    if not _has_token(request):
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


async def _start(rt: Runtime, request: Request) -> tuple[Job, float, Question, int]:
    t0 = time.perf_counter()
    q = await parse_question(request)
    try:
        # A typed question is only tokenized (~50 us): cheaper here than a hop to a worker thread and
        # back, which the first text would wait for. A spoken one computes features: off the loop.
        session = rt.new_session(q) if q.audio is None else await asyncio.to_thread(rt.new_session, q)
    except ValueError as e:
        raise bad(422, str(e)) from None
    job = Job(uuid.uuid4().hex[:12], session, asyncio.get_running_loop(), speaks=session.options.audio,
              audio_cap=session.options.max_audio_seconds)
    try:
        ahead = rt.scheduler.submit(job)
    except Busy as e:
        session.close()
        raise HTTPException(503, str(e), headers={"Retry-After": retry_after(e.retry_after)}) from None
    log.info("request %s: %s question, options %s, %d ahead", job.id, q.source,
             q.options.model_dump(exclude_defaults=True), ahead)
    return job, t0, q, ahead


_TICK = object()  # a keepalive tick, put into a job's queue by a timer


async def _batches(job: Job, deadline: float) -> AsyncIterator[list | None]:
    """The job's events, one list per model round, as they come; ``None`` items are keepalive ticks,
    one each ``serve.keepalive_s`` while nothing arrives; TimeoutError past ``deadline``. The queue is
    awaited directly and the tick is a timer putting into it: ``asyncio.wait_for`` per item would wrap
    every get in a task (three event loop passes from the model thread's put to here, not one)."""
    loop = asyncio.get_running_loop()
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError
        tick = loop.call_later(min(SERVE.keepalive_s, left), job.queue.put_nowait, _TICK)
        try:
            batch = await job.queue.get()
        finally:
            tick.cancel()
        if batch is None:
            return
        yield None if batch is _TICK else batch


async def runtime() -> Runtime:
    """The loaded model (a dependency of every API route), or 503 while it loads."""
    rt = getattr(app.state, "runtime", None)
    if rt is None or not rt.ready:
        raise bad(503, "the model is still loading; try again shortly", {"Retry-After": "5"})
    return rt


# ------------------------------------------------------------------------------------------- page
@app.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html")


@app.get("/app.js", include_in_schema=False)
def page_script() -> FileResponse:
    return FileResponse(WEB / "app.js", media_type="text/javascript")


# -------------------------------------------------------------------------------------------- API
@app.get("/v1/health", response_model=Health | Liveness, responses={503: _ERRORS[503]},
         summary="Liveness; with the bearer token (or none set) also model, device and sessions")
async def health(request: Request, rt: Runtime = Depends(runtime)) -> Health | Liveness:
    if not _has_token(request):  # what runs where is for the operator, not for anyone who asks
        return Liveness(status="ok", ready=rt.ready)
    s = rt.scheduler
    slot = s.slot_seconds
    return Health(status="ok", ready=rt.ready, model=rt.tag, device=str(rt.engine.device),
                  sample_rate=rt.engine.sample_rate, schedule=rt.schedule, max_active=s.max_active,
                  admit_ahead_s=s.admit_ahead_s, slot_seconds=None if slot is None else round(slot, 3),
                  held_for_audio=s.held_for_audio,
                  active=s.active, waiting=s.waiting, **s.counts)


@app.post("/v1/stream", summary="Ask; stream the spoken answer as Server-Sent Events",
          dependencies=[Depends(_authorized)], openapi_extra={"requestBody": _BODY},
          responses={200: {"description": "`event: start|text|reasoning|audio|done|error` frames, each with "
                                          "one JSON `data:` line", "content": {"text/event-stream": {}}},
                     **_ERRORS})
async def stream(request: Request, rt: Runtime = Depends(runtime)) -> StreamingResponse:
    job, t0, q, ahead = await _start(rt, request)
    opts = q.options
    deadline = t0 + SERVE.timeout_s

    async def frames() -> AsyncIterator[bytes]:
        firsts: dict[str, float] = {}
        yield _sse("start", {"type": "start", "request_id": job.id, "queued": ahead,
                             "wait_estimate_s": round(job.wait_estimate, 3), "sample_rate":
                             rt.engine.sample_rate if opts.audio else None,
                             "schedule": {"speak": opts.speak or rt.schedule["speak"],
                                          "think": opts.think or rt.schedule["think"]},
                             "options": opts.model_dump()})
        try:
            async for batch in _batches(job, deadline):
                if batch is None:
                    yield b": keepalive\n\n"
                    continue
                now = time.perf_counter()
                # One write per event, not one per round: each write's socket call lets go of the GIL.
                # Written a round at a time, 16 streams held it in longer stretches, the model thread's
                # rounds fell behind real time and answers stalled 1-2 times each (0 this way).
                for ev in batch:
                    firsts.setdefault(ev.type, now)
                    yield (_sse("done", _done_payload(ev, job, t0, firsts, opts.show_reasoning))
                           if ev.type == "done" else _sse(ev.type, ev.to_dict()))
        except TimeoutError:
            yield _sse("error", {"type": "error", "message": f"the answer took over serve.timeout_s "
                                                             f"({SERVE.timeout_s:g} s) and was stopped"})

    return _Stream(frames(), job, rt.scheduler, media_type="text/event-stream",
                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Request-Id": job.id})


@app.post("/v1/answer", response_model=Answer, summary="Ask; the whole answer at once (JSON + WAV)",
          dependencies=[Depends(_authorized)], openapi_extra={"requestBody": _BODY}, responses=_ERRORS)
async def answer(request: Request, rt: Runtime = Depends(runtime)) -> Answer:
    job, t0, q, _ = await _start(rt, request)
    pcm: list[bytes] = []
    firsts: dict[str, float] = {}
    done = None
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job, rt.scheduler))
    try:
        async for batch in _batches(job, t0 + SERVE.timeout_s):
            for ev in batch or ():
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
        watcher.cancel()
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


async def _cancel_on_disconnect(request: Request, job: Job, scheduler: Scheduler) -> None:
    """Frees the job's slot the moment its client goes away (the body is read already, so the next
    ASGI message is the disconnect); the streaming route gets the same from StreamingResponse."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    scheduler.cancel(job)


def _wav(pcm16: bytes, sr: int) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm16)
    return buf.getvalue()


errors.install(app, page={"/": ["GET", "HEAD"], "/app.js": ["GET", "HEAD"]})  # after the last route
