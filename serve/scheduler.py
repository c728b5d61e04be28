"""The scheduler: admits, orders and cancels; one thread owns the model and, each round, steps every
admitted session by one thinker position in one batch (``step_batch``: ``models.session.step_all``, one
batched thinker forward and batched talker steps over the runner's slots). Requests wait in line for a
place (``serve.max_active``), and past ``serve.max_queue`` are refused with a wait estimated from how
long recent answers held their places. Sessions share no state (models/session.py, models/runner.py),
so batching never mixes their outputs; events cross to the event loop through each job's queue.

    sched = Scheduler(max_active=8, max_queue=32, step_batch=models.session.step_all)
    ahead = sched.submit(Job(id, session, loop))   # Busy when the line is full
    sched.cancel(job)                              # a client went away: its slots are freed before the next round
"""

from __future__ import annotations

import asyncio
import collections
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(eq=False)
class Job:
    """One request's place in the scheduler; events cross to the event loop through ``queue``."""

    id: str
    session: Any  # models.session.Session
    loop: asyncio.AbstractEventLoop
    speaks: bool = True  # False: a text-only answer (no audio to keep ahead of)
    audio_cap: float = math.inf  # the answer's audio stops here (serve.max_audio_seconds)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    cancelled: bool = False
    state: str = "waiting"  # waiting -> active -> done | cancelled | failed
    audio_seconds: float = 0.0  # audio produced so far
    first_audio: float | None = None  # when its first chunk was produced
    last_turn: int = -1  # the scheduler's step counter when this job last stepped
    wait_estimate: float = 0.0  # seconds it was expected to wait in line when it was submitted

    @property
    def listening(self) -> bool:
        """More audio is to come for a listener: False for a text-only answer and for one whose audio
        reached its cap (its reasoning may go on). Only listening answers hold admission back."""
        return self.speaks and self.audio_seconds < self.audio_cap

    def ahead(self, now: float) -> float:
        """Seconds of audio the listener has in hand beyond real-time playback (from the first chunk
        on); minus infinity while the first chunk is still coming; 0 when not listening (it steps
        whenever the listeners have audio in hand)."""
        if not self.listening:
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
    """The line is full (serve.max_queue); ``retry_after``: seconds until a place is likely free."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(seconds: float) -> str:
    """An HTTP Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def step_each(sessions: list) -> list[list]:
    """Step sessions one after another (for sessions without a batch stepper)."""
    return [s.step() for s in sessions]


class Scheduler:
    """One thread owns the model and, each round, steps every active session once, in one call of
    ``step_batch`` (a list of sessions -> their events). The round lists them by need: the listener
    closest to running out of audio first (least audio in hand beyond real time; an answer still on its
    way to its first chunk comes first; ties go to the least recently stepped); ``step_each`` steps them
    in that order, a batch stepper returns their events in that order.

    Admission (the rule, in full): a waiting request starts as soon as fewer than ``max_active`` run
    (``admit_ahead_s=0``, the default: ``max_active`` answers run at once; ``max_active=1`` is one at a
    time, moshi's lock). With ``admit_ahead_s > 0`` it also waits until every running *spoken* answer
    has at least that much audio in hand beyond real time (text-only answers never hold it back): on a
    model slower than real time fewer than ``max_active`` then run, and the rest wait in line instead
    of every listener stuttering. The line holds ``max_queue``; past it ``submit`` raises ``Busy``
    with a wait estimated from the measured queue (``estimate_wait``)."""

    RECENT = 32  # finished answers whose slot times estimate the wait

    def __init__(self, max_active: int, max_queue: int, admit_ahead_s: float = 0.0,
                 step_batch: Callable[[list], list[list]] = step_each) -> None:
        self.max_active, self.max_queue, self.admit_ahead_s = max_active, max_queue, admit_ahead_s
        self.step_batch = step_batch
        self._cv = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._stop = False
        self._turn = 0
        self._slot_seconds: collections.deque[float] = collections.deque(maxlen=self.RECENT)
        self.counts = {"served": 0, "cancelled": 0, "failed": 0, "rejected": 0}
        self._thread = threading.Thread(target=self._run, name="omni-tis-model", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def held_for_audio(self) -> bool:
        """True while a request waits although a slot is free: the admit_ahead_s rule holds it until the
        running answers have audio in hand (the model is not keeping them in real time)."""
        with self._cv:
            return bool(self._waiting) and len(self._active) < self.max_active \
                and not self._admissible(time.perf_counter())

    @property
    def slot_seconds(self) -> float | None:
        """Mean seconds a recent answer held its slot (admission to end); None before the first."""
        with self._cv:
            return statistics.fmean(self._slot_seconds) if self._slot_seconds else None

    def estimate_wait(self, ahead: int) -> float:
        """Seconds until a request with ``ahead`` requests before it in line starts: the slots free up
        ``max_active`` per mean slot time, so it starts after (ahead + 1) / max_active of them (0 while a
        slot is free and nobody waits). Before any answer has finished, the longest a running answer
        has held its slot so far stands in for the mean (at least 1 s)."""
        with self._cv:
            now = time.perf_counter()
            if ahead == 0 and not self._waiting and self._admissible(now):
                return 0.0
            per = (statistics.fmean(self._slot_seconds) if self._slot_seconds else
                   max([now - j.started for j in self._active if j.started is not None] + [1.0]))
            return per * (ahead + 1) / self.max_active

    def submit(self, job: Job) -> int:
        """Queue ``job``; returns how many wait before it. Raises ``Busy`` when the line is full."""
        with self._cv:
            ahead = len(self._waiting)
            if ahead >= self.max_queue and not self._admissible(time.perf_counter()):
                self.counts["rejected"] += 1
                wait = self.estimate_wait(ahead)
                raise Busy(f"{len(self._active)} answers are running and {ahead} wait (serve.max_queue); "
                           f"a place is likely free in about {wait:.0f} s", wait)
            job.wait_estimate = self.estimate_wait(ahead)
            self._waiting.append(job)
            self._cv.notify()
            return ahead

    def cancel(self, job: Job) -> None:
        """Stop ``job`` (a client went away): a waiting job leaves the line now, an active one is closed
        (its slots freed) by the model thread before the next round, never during a forward. No-op for
        a finished job."""
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
        return self.admit_ahead_s <= 0 or all(j.ahead(now) >= self.admit_ahead_s for j in self._active if j.listening)

    def _finish(self, job: Job, state: str) -> None:  # holding self._cv
        if job.started is not None and job.state == "active":
            self._slot_seconds.append(time.perf_counter() - job.started)
        job.session.close()
        job.state = state
        self.counts["served" if state == "done" else state] += 1
        job.put(None)

    def _next(self) -> list[Job] | None:
        """Admit who may start, drop the cancelled, list who steps this round (every active job, by
        need); None when stopping."""
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
                    return sorted(self._active, key=lambda j: (j.ahead(now), j.last_turn))
                self._cv.wait()

    def _run(self) -> None:
        from models.events import ErrorEvent

        while (jobs := self._next()) is not None:
            try:
                batch = self.step_batch([job.session for job in jobs])  # a session's failure is its ErrorEvent
            except Exception as e:  # a bug in the stepper: fail this round's jobs, keep serving
                batch = [[ErrorEvent(f"{type(e).__name__}: {e}")] for _ in jobs]
                for job in jobs:
                    job.session.done = True
            self._turn += 1
            ended = []
            for job, events in zip(jobs, batch):
                job.last_turn = self._turn
                for ev in events:
                    if ev.type == "audio":
                        job.first_audio = job.first_audio or time.perf_counter()
                        job.audio_seconds += ev.seconds
                if events:
                    job.put(events)
                if job.session.done:
                    ended.append((job, any(ev.type == "error" for ev in events)))
            time.sleep(0)  # hand the GIL to the event loop now, so it sends these at once
            if ended:
                with self._cv:
                    for job, failed in ended:
                        self._active.remove(job)
                        self._finish(job, "failed" if failed else "done")
