"""The service's parts (serve/) without a server: the scheduler that owns the model thread (fake
sessions), admission and wait estimates, the audio checks of an upload, the option schema, bounded
JSON, the error contract and the SSE framing. The real server is in tests/test_service.py.

    .venv/bin/python -m pytest tests/test_service_unit.py -q
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service_client import audio_file, parse_frame, voiced

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # serve/ sits at the repository root
from serve import errors, requests, routes  # noqa: E402
from serve.config import SERVE  # noqa: E402
from serve.requests import AskJSON, AskOptions, decode_audio  # noqa: E402
from serve.scheduler import Busy, Job, Scheduler, retry_after  # noqa: E402


class FakeSession:
    """Steps ``n`` times, one event each, then done; records which thread stepped it and when."""

    log: list[tuple[str, int]] = []

    def __init__(self, name: str, n: int, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.name, self.n, self.fail_at, self.delay = name, n, fail_at, delay
        self.i, self.done, self.closed = 0, False, False
        self.threads: set[str] = set()

    def step(self):
        from models.events import DoneEvent, ErrorEvent, TextEvent

        assert not self.closed, "stepped after close"
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        FakeSession.log.append((self.name, self.i))
        self.i += 1
        if self.fail_at is not None and self.i == self.fail_at:
            self.done = True
            return [ErrorEvent("boom")]
        if self.i == self.n:
            self.done = True
            return [DoneEvent(self.name, "", {})]
        return [TextEvent(f"{self.name}{self.i}", self.i)]

    def close(self) -> None:
        self.closed = True
        self.done = True


class FakeSpeaker(FakeSession):
    """Each step produces ``chunk`` seconds of audio (16 kHz PCM16 zeros)."""

    def __init__(self, name: str, n: int, chunk: float = 0.1) -> None:
        super().__init__(name, n)
        self.chunk = chunk

    def step(self):
        from models.events import AudioEvent

        events = super().step()
        return [AudioEvent(b"\0\0" * int(self.chunk * 16000), 16000, self.i - 1, 0)] + events


async def _drain(job: Job, timeout: float = 10) -> list:
    out = []
    while True:
        batch = await asyncio.wait_for(job.queue.get(), timeout)
        if batch is None:
            return out
        out += batch


def _run(coro):
    return asyncio.run(coro)


def test_scheduler_interleaves_active_sessions_and_queues_the_rest():
    async def main():
        FakeSession.log = []
        sched = Scheduler(max_active=2, max_queue=8)
        loop = asyncio.get_running_loop()
        jobs = [Job(str(i), FakeSession(f"s{i}", 4), loop) for i in range(3)]
        for j in jobs:
            sched.submit(j)
        outs = await asyncio.gather(*(_drain(j) for j in jobs))
        sched.close()
        return jobs, outs, list(FakeSession.log), sched

    jobs, outs, log, sched = _run(main())
    # Each job got exactly its own events, in order, ending with its done.
    for j, out in zip(jobs, outs):
        assert [e.delta for e in out[:-1]] == [f"{j.session.name}{i}" for i in range(1, 4)]
        assert out[-1].type == "done" and out[-1].response == j.session.name
        assert j.state == "done" and j.session.closed
        assert j.session.threads == {"omni-tis-model"}  # every step on the one model thread
    # s0 and s1 alternate step by step; s2 waits for a free slot.
    first = [name for name, _ in log[:4]]
    assert first == ["s0", "s1", "s0", "s1"], log
    assert log.index(("s2", 0)) > min(log.index(("s0", 3)), log.index(("s1", 3)))
    assert sched.counts["served"] == 3 and sched.active == 0 and sched.waiting == 0


def test_scheduler_steps_the_emptiest_listener_and_admits_only_with_audio_in_hand():
    async def main():
        FakeSession.log = []
        sched = Scheduler(max_active=4, max_queue=8, admit_ahead_s=0.35)
        loop = asyncio.get_running_loop()
        jobs = [Job(name, FakeSpeaker(name, 12), loop) for name in ("a", "b")]
        quiet = Job("t", FakeSession("t", 3), loop, speaks=False)  # text only: never blocks admission
        for j in jobs + [quiet]:
            sched.submit(j)
        await asyncio.gather(*(_drain(j) for j in jobs + [quiet]))
        sched.close()
        return list(FakeSession.log)

    log = [name for name, _ in _run(main())]
    # b waits until a has >= 0.35 s of audio beyond real time (4 chunks of 0.1 s; steps take microseconds)...
    assert log[:4] == ["a"] * 4, log
    # ... then every round steps both, the emptiest listener first: b (no audio yet), then a.
    first_b = log.index("b")
    assert log[first_b:first_b + 4] == ["b", "a", "b", "a"], log
    # t was admitted once b had audio in hand too, and then shared the model.
    assert log.index("t") > first_b and log.count("t") == 3


def test_scheduler_steps_every_active_session_in_one_batch_call():
    """A batch stepper gets every active session each round (by need) and its events go to each job."""
    calls: list[list[str]] = []

    def batch(sessions):
        calls.append([s.name for s in sessions])
        return [s.step() for s in sessions]

    async def main():
        sched = Scheduler(max_active=3, max_queue=8, step_batch=batch)
        loop = asyncio.get_running_loop()
        jobs = [Job(str(i), FakeSession(f"s{i}", 3 + i, delay=0.005), loop) for i in range(3)]
        for j in jobs:
            sched.submit(j)
        outs = await asyncio.gather(*(_drain(j) for j in jobs))
        sched.close()
        return jobs, outs

    jobs, outs = _run(main())
    for j, out in zip(jobs, outs):
        assert [e.delta for e in out[:-1]] == [f"{j.session.name}{i}" for i in range(1, j.session.n)]
        assert out[-1].type == "done" and j.state == "done"
    assert max(len(c) for c in calls) == 3 and calls[-1] == ["s2"]  # the longest ends alone
    assert sum(len(c) for c in calls) == 3 + 4 + 5


def test_scheduler_cancel_frees_waiting_and_active_jobs():
    async def main():
        sched = Scheduler(max_active=1, max_queue=8)
        loop = asyncio.get_running_loop()
        long = Job("a", FakeSession("a", 10_000, delay=0.001), loop)
        waiting = Job("b", FakeSession("b", 3), loop)
        sched.submit(long)
        sched.submit(waiting)
        await asyncio.wait_for(long.queue.get(), 5)  # a is running
        sched.cancel(waiting)
        assert waiting.state == "cancelled" and waiting.session.closed and sched.waiting == 0
        sched.cancel(long)
        rest = await _drain(long)
        assert long.state == "cancelled" and long.session.closed
        assert long.session.i < 10_000 and all(e.type == "text" for e in rest)
        assert await asyncio.wait_for(waiting.queue.get(), 1) is None  # its reader is told it ended
        steps = long.session.i
        await asyncio.sleep(0.05)
        assert long.session.i == steps  # never stepped again
        sched.cancel(long)  # finished: a no-op
        counts = dict(sched.counts)
        sched.close()
        return counts

    counts = _run(main())
    assert counts["cancelled"] == 2 and counts["served"] == 0


def test_scheduler_refuses_past_the_queue_and_counts_failures():
    async def main():
        sched = Scheduler(max_active=1, max_queue=1)
        loop = asyncio.get_running_loop()
        running = Job("a", FakeSession("a", 10_000, delay=0.001), loop)
        sched.submit(running)
        await asyncio.wait_for(running.queue.get(), 5)
        waiting = Job("b", FakeSession("b", 2), loop)
        assert sched.submit(waiting) == 0
        with pytest.raises(Busy):
            sched.submit(Job("c", FakeSession("c", 2), loop))
        sched.cancel(running)
        await asyncio.gather(_drain(running), _drain(waiting))
        bad = Job("d", FakeSession("d", 5, fail_at=2), loop)
        sched.submit(bad)
        out = await _drain(bad)
        counts = dict(sched.counts)
        sched.close()
        return out, counts

    out, counts = _run(main())
    assert out[-1].type == "error"
    assert counts["rejected"] == 1 and counts["failed"] == 1 and counts["served"] == 1


def test_close_ends_every_job():
    async def main():
        sched = Scheduler(max_active=1, max_queue=4)
        loop = asyncio.get_running_loop()
        jobs = [Job(str(i), FakeSession(str(i), 10_000, delay=0.001), loop) for i in range(3)]
        for j in jobs:
            sched.submit(j)
        await asyncio.wait_for(jobs[0].queue.get(), 5)
        await asyncio.to_thread(sched.close)
        await asyncio.gather(*(_drain(j) for j in jobs))
        return jobs

    for j in _run(main()):
        assert j.session.closed and j.state == "cancelled"


# ----------------------------------------------------------------------------------------- uploads
def _code(fn, *a) -> tuple[int, str]:
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as e:
        fn(*a)
    return e.value.status_code, str(e.value.detail)


@pytest.mark.parametrize("sr,channels,fmt,subtype", [(16000, 1, "WAV", None), (44100, 2, "WAV", "FLOAT"),
                                                     (11025, 1, "FLAC", None), (22050, 1, "OGG", "VORBIS"),
                                                     (8000, 1, "MP3", None), (48000, 2, "OGG", "OPUS")])
def test_accepted_audio(sr, channels, fmt, subtype):
    wave, got_sr, kind = decode_audio(audio_file(voiced(1.0, sr, channels=channels), sr, fmt, subtype))
    assert got_sr == sr and kind == {"WAV": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}[fmt]
    assert wave.shape[0] > 0.9 * sr and (wave.ndim == 1 if channels == 1 else wave.shape[1] == channels)


def test_refused_audio():
    s = SERVE
    cases = {
        "empty": (b"", 422, "empty"),
        "corrupt": (b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10, 422, "could not decode"),
        "truncated": (audio_file(voiced(1.0), 16000)[:30], 422, "could not decode"),
        "not audio": (b"%PDF-1.4 hello", 422, "could not decode"),
        "silent": (audio_file(np.zeros(16000, np.float32), 16000), 422, "silent"),
        "quiet": (audio_file(voiced(1.0) * 1e-4, 16000), 422, "silent"),
        "no samples": (audio_file(np.zeros(0, np.float32), 16000), 422, "no samples"),
        "nan": (audio_file(np.full(1600, np.nan, np.float32), 16000, "WAV", "FLOAT"), 422, "NaN"),
        "too long": (audio_file(voiced(0.1, 8000).repeat(int(s.max_input_seconds * 10) + 20), 8000), 413, "lasts"),
        "rate too low": (audio_file(voiced(1.0, 4000), 4000), 422, "sample rate 4000"),
        "aiff": (audio_file(voiced(0.5), 16000, "AIFF"), 415, "AIFF"),
    }
    for name, (data, status, words) in cases.items():
        code, msg = _code(decode_audio, data)
        assert (code, True) == (status, words in msg), (name, code, msg)


def test_options_are_strict_and_bounded():
    from pydantic import ValidationError

    s = SERVE
    assert AskOptions().max_new_tokens == s.default_max_new_tokens and AskOptions().show_reasoning is False
    assert AskOptions.model_validate({"temperature": 1}).temperature == 1.0  # an int is a number
    for bad in [{"max_new_tokens": "5"}, {"max_new_tokens": 5.0}, {"seed": True}, {"show_reasoning": "yes"},
                {"max_new_tokens": s.max_new_tokens + 1}, {"max_new_tokens": 0}, {"speak": 0},
                {"think": s.max_schedule + 1}, {"temperature": -0.1}, {"temperature": s.max_temperature * 10},
                {"seed": -1}, {"top_p": 0.9}, {"temperature": float("nan")}, {"temperature": float("inf")}]:
        with pytest.raises(ValidationError):
            AskOptions.model_validate(bad)


def test_sse_frames_hold_one_data_line():
    text = routes._sse("text", {"type": "text", "delta": "two\nlines\r\n and: colons", "position": 3}).decode()
    assert text.endswith("\n\n") and text.count("\n") == 3
    event, data = parse_frame(text[:-2])
    assert event == "text" and data["delta"] == "two\nlines\r\n and: colons"


def test_batches_pass_rounds_whole_tick_while_idle_and_leave_no_tick_behind(monkeypatch):
    """``routes._batches``: each model round's events as one list; a keepalive tick (None) every
    serve.keepalive_s while nothing comes; the answer's end stops it, and no tick timer outlives it (a
    late tick would sit in the queue); past the deadline, TimeoutError."""
    import dataclasses

    from models.events import TextEvent

    monkeypatch.setattr(routes, "SERVE", dataclasses.replace(SERVE, keepalive_s=0.05))
    rounds = [[TextEvent("a", 0), TextEvent("b", 1)], [TextEvent("c", 2)]]

    async def main():
        job = Job("j", FakeSession("j", 1), asyncio.get_running_loop())
        got = []

        async def read():
            async for batch in routes._batches(job, time.perf_counter() + 30):
                got.append(batch)

        reader = asyncio.create_task(read())
        job.queue.put_nowait(rounds[0])
        await asyncio.sleep(0.3)  # idle: ticks
        job.queue.put_nowait(rounds[1])
        job.queue.put_nowait(None)
        await asyncio.wait_for(reader, 5)
        await asyncio.sleep(0.2)  # a tick timer left running would put into the queue now
        late = job.queue.qsize()
        with pytest.raises(TimeoutError):
            async for batch in routes._batches(Job("k", FakeSession("k", 1), job.loop), time.perf_counter() + 0.12):
                assert batch is None
        return got, late

    got, late = _run(main())
    assert got[0] == rounds[0] and got[-1] == rounds[1]
    ticks = got[1:-1]
    assert ticks and all(t is None for t in ticks), got
    assert late == 0


def test_stream_writes_each_event_as_its_own_frame_in_order(monkeypatch):
    """/v1/stream through the app (a fake runtime: sessions of two events per round): the start frame,
    then one body write per event, in the model's order, then the end. (One write per round held the
    GIL in longer stretches: at 16 streams the model fell behind real time, see serve/routes.py.)"""
    import json
    import math
    from types import SimpleNamespace

    class FakeRuntime:
        ready, schedule = True, {"speak": 2, "think": 8}
        engine = SimpleNamespace(sample_rate=16000, device="cpu")

        def __init__(self) -> None:
            self.scheduler = Scheduler(2, 4)

        def new_session(self, q):
            session = FakeSpeaker("s", 3, chunk=0.01)  # rounds: [audio, text], [audio, text], [audio, done]
            session.options = SimpleNamespace(audio=True, max_audio_seconds=math.inf)
            return session

    rt = FakeRuntime()
    monkeypatch.setattr(routes.app.state, "runtime", rt, raising=False)
    body = json.dumps({"text": "What is 3 plus 4?"}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/stream", "raw_path": b"/v1/stream",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the client stays to the end

    async def send(message):
        sent.append(message)

    async def main():
        try:
            await asyncio.wait_for(routes.app(scope, receive, send), 10)
        finally:
            await asyncio.to_thread(rt.scheduler.close)

    _run(main())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    chunks = [m["body"].decode() for m in sent[1:] if m["body"]]
    frames = [[parse_frame(f)[0] for f in c.split("\n\n") if f] for c in chunks]
    assert frames == [["start"], ["audio"], ["text"], ["audio"], ["text"], ["audio"], ["done"]], frames


# ------------------------------------------------------------------------------------ admission, waits
def test_admission_rule_is_max_active_or_audio_in_hand_and_says_which():
    """8 slots and 9 spoken answers that never get ahead of real time. With admit_ahead_s 0 all 8 run at
    once; with admit_ahead_s > 0 one runs and the others are held although slots are free, and the
    scheduler says so (health's held_for_audio)."""
    slots, ahead = 8, 0.5

    async def main(admit: float):
        FakeSession.log = []
        sched = Scheduler(slots, SERVE.max_queue, admit)
        loop = asyncio.get_running_loop()
        jobs = [Job(str(i), FakeSpeaker(f"s{i}", 6, chunk=0.0), loop) for i in range(9)]
        for j in jobs:
            sched.submit(j)
        await asyncio.wait_for(jobs[0].queue.get(), 5)
        held = sched.held_for_audio
        await asyncio.gather(*(_drain(j) for j in jobs))
        sched.close()
        return list(FakeSession.log), held

    log, held = _run(main(0.0))
    names = [name for name, _ in log]
    assert set(names[:8]) == {f"s{i}" for i in range(8)}, names[:8]  # the first 8 steps: 8 different answers
    first_done = min(log.index((f"s{i}", 5)) for i in range(8))
    assert log.index(("s8", 0)) > first_done and not held  # the ninth waited for a slot, nothing was held
    log, held = _run(main(ahead))
    assert [name for name, _ in log[:6]] == ["s0"] * 6 and held  # one at a time: no audio ever in hand


def test_text_only_answers_never_hold_admission():
    async def main():
        FakeSession.log = []
        sched = Scheduler(max_active=4, max_queue=8, admit_ahead_s=0.35)
        loop = asyncio.get_running_loop()
        quiet = Job("t", FakeSession("t", 200, delay=0.0005), loop, speaks=False)
        spoken = Job("a", FakeSpeaker("a", 30), loop)
        sched.submit(quiet)
        await asyncio.wait_for(quiet.queue.get(), 5)  # t is running
        sched.submit(spoken)
        await asyncio.gather(_drain(quiet), _drain(spoken))
        sched.close()
        return list(FakeSession.log)

    log = [name for name, _ in _run(main())]
    assert log.index("a") < log.index(("t")) + 10, log[:20]  # admitted at once, not after t's 200 steps
    # ... and t is not starved meanwhile: it steps whenever a has audio in hand.
    assert "t" in log[log.index("a"):log.index("a") + 12], log[:30]


def test_an_answer_whose_audio_is_complete_never_holds_admission():
    """Its audio reached the cap (the thinker may still be reasoning): nothing more to buffer for."""
    class Capped(FakeSpeaker):  # 0.2 s of audio in two chunks, then only text
        def step(self):
            events = super().step()
            return events if self.i <= 2 else events[1:]

    async def main():
        FakeSession.log = []
        sched = Scheduler(max_active=4, max_queue=8, admit_ahead_s=0.35)
        loop = asyncio.get_running_loop()
        capped = Job("c", Capped("c", 400, chunk=0.1), loop, audio_cap=0.2)
        capped.session.delay = 0.0005
        sched.submit(capped)
        await asyncio.wait_for(capped.queue.get(), 5)
        other = Job("a", FakeSpeaker("a", 3), loop)
        sched.submit(other)
        await asyncio.gather(_drain(capped), _drain(other))
        sched.close()
        return list(FakeSession.log)

    log = [name for name, _ in _run(main())]
    assert "a" in log[:20], log[:20]  # admitted once c had its 0.2 s, not after c's 400 steps


def test_busy_retry_after_comes_from_the_measured_queue():
    async def main():
        sched = Scheduler(max_active=2, max_queue=3)
        loop = asyncio.get_running_loop()
        assert sched.estimate_wait(0) == 0.0  # a free slot, nobody waiting
        warm = [Job(str(i), FakeSession(str(i), 10, delay=0.01), loop) for i in range(2)]
        for j in warm:
            sched.submit(j)
        await asyncio.gather(*(_drain(j) for j in warm))
        measured = sched.slot_seconds
        long = [Job(f"l{i}", FakeSession(f"l{i}", 10_000, delay=0.001), loop) for i in range(5)]
        for j in long[:2]:
            sched.submit(j)
            await asyncio.wait_for(j.queue.get(), 5)  # running
        for j in long[2:]:
            sched.submit(j)
        with pytest.raises(Busy) as e:
            sched.submit(Job("x", FakeSession("x", 2), loop))
        queued = [j.wait_estimate for j in long[2:]]
        for j in long:
            sched.cancel(j)
        await asyncio.gather(*(_drain(j) for j in long))
        sched.close()
        return measured, e.value, queued

    measured, busy, queued = _run(main())
    # Each answer held its slot ~10 x 0.01 s x 2 (two interleaved).
    assert 0.1 < measured < 1.0
    # The line holds 3: the refused request would have had 3 ahead, 2 slots: (3 + 1) / 2 slot times.
    assert busy.retry_after == pytest.approx(measured * 4 / 2, rel=1e-6)
    assert retry_after(busy.retry_after) == str(max(1, int(np.ceil(busy.retry_after))))
    assert f"about {busy.retry_after:.0f} s" in str(busy)
    # Queued requests were told their own estimate, growing with their place in line.
    assert queued == pytest.approx([measured * k / 2 for k in (1, 2, 3)], rel=1e-6)


def test_retry_after_is_whole_seconds_at_least_one():
    assert [retry_after(x) for x in (0.0, 0.2, 1.0, 1.01, 75.3)] == ["1", "1", "1", "2", "76"]


# ------------------------------------------------------------------------------------------ JSON, errors
def test_json_nesting_is_bounded():
    from fastapi import HTTPException

    assert requests.load_json(b'{"text": "hi", "options": {"seed": 1}}', "the body", 400)["options"] == {"seed": 1}
    assert requests.load_json("[" * 8 + "]" * 8, "x", 400) == [[[[[[[[]]]]]]]]
    for raw in ("[" * 9 + "]" * 9, "[" * 100_000 + "]" * 100_000, '{"a": ' * 5000 + "1" + "}" * 5000):
        with pytest.raises(HTTPException) as e:
            requests.load_json(raw, "options", 422)
        assert e.value.status_code == 422 and "options nests" in e.value.detail
    with pytest.raises(HTTPException) as e:
        requests.load_json(b"{nope", "the body", 400)
    assert e.value.status_code == 400 and "not valid JSON" in e.value.detail


def test_guard_turns_every_escape_into_json():
    """A fault answers a JSON 500 (no exception escapes to the server, so the connection stays); a client
    that went away is a 499, not a server error, and logs no traceback."""
    from fastapi import FastAPI
    from starlette.requests import ClientDisconnect
    from starlette.testclient import TestClient

    app = FastAPI()
    app.add_middleware(errors.Guard)

    @app.get("/bug")
    def bug():
        raise RuntimeError("boom")

    @app.get("/gone")
    def gone():
        raise ClientDisconnect()

    c = TestClient(app, raise_server_exceptions=True)  # an escape would raise here
    r = c.get("/bug")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json" and "bug" in r.json()["detail"]
    r = c.get("/gone")
    assert r.status_code == 499 and r.json()["detail"] == "client closed the request"


def test_openapi_documents_every_error_status_and_no_length_that_validation_would_answer_422():
    schema = routes.app.openapi()
    for path in ("/v1/stream", "/v1/answer"):
        codes = set(schema["paths"][path]["post"]["responses"])
        assert {"400", "401", "408", "413", "415", "422", "500", "503"} <= codes, (path, codes)
        assert "Retry-After" in schema["paths"][path]["post"]["responses"]["503"]["headers"]
    text = schema["components"]["schemas"]["AskJSON"]["properties"]["text"]
    assert text["maxLength"] == SERVE.max_text_chars  # documented (applies to the string branch)
    AskJSON.model_validate({"text": "x" * (SERVE.max_text_chars + 1)})  # 413 later, not 422 here


def _request(messages, delay: float):
    """A starlette Request whose body arrives as ``messages`` (ASGI dicts), one every ``delay`` s;
    after them the client sends nothing more (a stall)."""
    from starlette.requests import Request

    it = iter(messages)

    async def receive():
        await asyncio.sleep(delay)
        try:
            return next(it)
        except StopIteration:
            await asyncio.sleep(3600)

    return Request({"type": "http", "method": "POST", "path": "/v1/stream", "headers": []}, receive)


def test_body_reads_time_out_on_a_stall_and_on_a_trickle(monkeypatch):
    import dataclasses

    from fastapi import HTTPException
    from starlette.requests import ClientDisconnect

    monkeypatch.setattr(requests, "SERVE", dataclasses.replace(SERVE, body_timeout_s=0.2, timeout_s=0.6))
    chunk = {"type": "http.request", "body": b"x", "more_body": True}

    async def read(messages, delay):
        t0 = time.perf_counter()
        try:
            return await requests.read_body(_request(messages, delay)), time.perf_counter() - t0
        except HTTPException as e:
            return e, time.perf_counter() - t0

    whole, _ = _run(read([chunk, {"type": "http.request", "body": b"y", "more_body": False}], 0.01))
    assert whole == b"xy"
    stalled, took = _run(read([chunk] * 2, 0.01))  # two bytes, then nothing
    assert stalled.status_code == 408 and "serve.body_timeout_s" in stalled.detail and 0.2 <= took < 0.5
    assert stalled.headers == {"Connection": "close"}
    trickle, took = _run(read([chunk] * 20, 0.1))  # a byte every 0.1 s: never a pause of 0.2 s
    assert trickle.status_code == 408 and "serve.timeout_s" in trickle.detail and 0.55 <= took < 0.9
    with pytest.raises(ClientDisconnect):
        _run(requests.read_body(_request([chunk, {"type": "http.disconnect"}], 0.01)))
