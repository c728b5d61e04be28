"""A request body -> a validated question, or an ``HTTPException`` with the 4xx that says what is wrong.

A body is JSON ``{"text" | "audio" (base64 wav/flac/ogg/mp3), "options"}`` or a multipart form with the
fields ``audio`` (file) or ``text``, and ``options`` (a JSON object). Options: ``speak``, ``think`` (the
schedule, default the model's), ``max_new_tokens``, ``temperature``, ``seed``, ``show_reasoning``,
``audio``; anything else is refused. The limits are params.yaml's ``serve:`` (serve.config).

    q = await parse_question(request)   # Question(text | audio, options, source)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve.config import SERVE

MAX_JSON_DEPTH = 8  # the request schema nests 2 deep; deeper is a mistake or an attack on the parser
AUDIO_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}


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
    temperature: float = Field(0.0, ge=0.0, le=SERVE.max_temperature, allow_inf_nan=False, description="0 = greedy")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="same seed, same answer")
    show_reasoning: bool = Field(False, description="stream the silent reasoning too")
    audio: bool = Field(True, description="speak the answer (false: text only)")


class AskJSON(BaseModel):
    """A JSON request: exactly one of ``text`` or ``audio`` (a base64 wav/flac/ogg/mp3 file)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # The length limit is checked after validation (413, as /openapi.json says), so it is only documented here.
    text: str | None = Field(None, min_length=1, json_schema_extra={"maxLength": SERVE.max_text_chars},
                             description="the question (at most serve.max_text_chars characters, else 413)")
    audio: str | None = Field(None, min_length=1, description="base64 of a wav, flac, ogg or mp3 file")
    options: AskOptions = Field(default_factory=AskOptions)


class AskForm(BaseModel):
    """The multipart form (documentation only; the route parses it itself to answer bad input with 4xx)."""

    model_config = ConfigDict(extra="forbid")
    audio: bytes | None = Field(None, json_schema_extra={"format": "binary"}, description="wav/flac/ogg/mp3 file")
    text: str | None = Field(None, json_schema_extra={"maxLength": SERVE.max_text_chars})
    options: str | None = Field(None, description="a JSON object of options, as in the JSON body")




@dataclass
class Question:
    text: str | None
    audio: tuple[np.ndarray, int] | None
    options: AskOptions
    source: str  # "text", or the audio's container ("wav", "mp3", ...)


def bad(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


def _depth(value: Any) -> int:
    """How deeply ``value`` (parsed JSON) nests lists and objects; stops counting past MAX_JSON_DEPTH."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_JSON_DEPTH:
                break
            todo.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def load_json(raw: bytes | str, where: str, status: int) -> Any:
    """``raw`` parsed, or a ``status`` 4xx naming ``where``: not JSON, or nested deeper than
    MAX_JSON_DEPTH (json's C parser raises RecursionError past ~1000 levels: without this, a 500)."""
    try:
        data, deep = json.loads(raw), False
    except RecursionError:
        data, deep = None, True
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(status, f"{where} is not valid JSON: {e}") from None
    if deep or _depth(data) > MAX_JSON_DEPTH:
        raise bad(status, f"{where} nests lists or objects deeper than {MAX_JSON_DEPTH} levels; "
                           "send the flat object the API documents")
    return data


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
        raise bad(422, "the audio is empty (0 bytes); send a wav, flac, ogg or mp3 file")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            kind = AUDIO_FORMATS.get(f.format)
            if kind is None:
                raise bad(415, f"audio format {f.format} is not accepted; send wav, flac, ogg or mp3")
            sr, frames = f.samplerate, f.frames
            if not SERVE.min_sample_rate <= sr <= SERVE.max_sample_rate:
                raise bad(422, f"sample rate {sr} Hz is outside [{SERVE.min_sample_rate}, {SERVE.max_sample_rate}] Hz")
            if frames > SERVE.max_input_seconds * sr:
                raise bad(413, f"the audio lasts {frames / sr:.1f} s; at most {SERVE.max_input_seconds:g} s")
            wave = f.read(dtype="float32", always_2d=False)
    except HTTPException:
        raise
    except Exception as e:  # libsndfile's errors (corrupt, truncated, not audio) carry no common type
        why = str(e).split(">: ", 1)[-1]  # drop "Error opening <_io.BytesIO object at 0x...>: "
        raise bad(422, f"could not decode the audio as wav, flac, ogg or mp3: {why}") from None
    if wave.shape[0] == 0:
        raise bad(422, "the audio holds no samples")
    if not np.isfinite(wave).all():
        raise bad(422, "the audio holds NaN or infinite samples")
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    level = 20 * np.log10(rms) if rms > 0 else -np.inf
    if level < SERVE.silence_dbfs:
        raise bad(422, f"the audio is silent (level {level:.0f} dBFS, below serve.silence_dbfs "
                        f"{SERVE.silence_dbfs:g}); record the question again")
    return wave, sr, kind


async def read_body(request: Request) -> bytes:
    """The whole body, within serve.max_body_mb (413), with no pause over serve.body_timeout_s and all
    of it within serve.timeout_s (a client trickling bytes is stalled too): 408, and the connection
    closes, so the rest of a stalled body is not read as the next request. A client that goes away
    raises starlette's ClientDisconnect (answered by serve.errors.Guard: no traceback)."""
    limit = int(SERVE.max_body_mb * 2**20)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise bad(413, f"the request body is {int(declared)} bytes; at most {limit} (serve.max_body_mb)")
    body = bytearray()
    chunks = request.stream().__aiter__()
    deadline = time.monotonic() + SERVE.timeout_s
    while True:
        wait = min(SERVE.body_timeout_s, deadline - time.monotonic())
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            why = (f"nothing arrived for {SERVE.body_timeout_s:g} s (serve.body_timeout_s)"
                   if wait == SERVE.body_timeout_s else f"it took over serve.timeout_s ({SERVE.timeout_s:g} s)")
            raise bad(408, f"the upload stalled: {why} after {len(body)} bytes; send the body without pauses",
                      {"Connection": "close"}) from None
        body += chunk
        if len(body) > limit:
            raise bad(413, f"the request body is over {limit} bytes (serve.max_body_mb)", {"Connection": "close"})
    return bytes(body)


def _options(raw: Any, where: str) -> AskOptions:
    if raw is None:
        return AskOptions()
    try:
        return AskOptions.model_validate(raw)
    except ValidationError as e:
        raise bad(422, _explain(e, f"{where}.")) from None


async def parse_question(request: Request) -> Question:
    """The request body (JSON or multipart) -> a validated question, or a 4xx."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "multipart/form-data"):
        raise bad(415, f"content type {ctype or '(none)'!r} is not accepted; send application/json "
                        "({\"text\": ...} or {\"audio\": base64}) or multipart/form-data (audio file or text)")
    body = await read_body(request)
    if ctype == "application/json":
        data = load_json(body, "the body", 400)
        try:
            ask = AskJSON.model_validate(data)
        except ValidationError as e:
            raise bad(422, _explain(e)) from None
        text, options = ask.text, ask.options
        audio = None
        if ask.audio is not None:
            try:
                audio = base64.b64decode(ask.audio, validate=True)
            except (binascii.Error, ValueError):
                raise bad(422, "audio: not valid base64") from None
    else:
        text, audio, options = await _parse_form(request, body)
    if (text is None) == (audio is None):
        raise bad(422, "send exactly one of text (the question) or audio (a wav, flac, ogg or mp3 file)")
    if text is not None:
        if not text.strip():
            raise bad(422, "text is blank")
        if len(text) > SERVE.max_text_chars:
            raise bad(413, f"text has {len(text)} characters; at most {SERVE.max_text_chars} (serve.max_text_chars)")
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
        raise bad(400, f"malformed multipart form: {e.detail}") from None
    except Exception as e:  # python-multipart's parse errors
        raise bad(400, f"malformed multipart form: {e}") from None
    unknown = sorted(set(form.keys()) - {"audio", "text", "options"})
    if unknown:
        raise bad(422, f"unknown form fields {unknown}; send audio (file) or text, and options (JSON)")
    twice = sorted(k for k in ("audio", "text", "options") if len(form.getlist(k)) > 1)
    if twice:
        raise bad(422, f"form fields {twice} sent more than once; send each at most once")
    a, t, o = form.get("audio"), form.get("text"), form.get("options")
    audio = None
    if a is not None:
        if not isinstance(a, UploadFile):
            raise bad(422, "audio must be a file part (curl -F audio=@question.wav)")
        audio = await a.read()
    if isinstance(t, UploadFile) or isinstance(o, UploadFile):
        raise bad(422, "text and options are plain form fields, not files")
    raw = None
    if o is not None:
        raw = load_json(o, "options", 422)
        if not isinstance(raw, dict):
            raise bad(422, "options: must be a JSON object")
    return t, audio, _options(raw, "options")

