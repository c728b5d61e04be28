"""A strict SSE client for the omni-tis service and a `bentoml serve` launcher, shared by the service
tests (tests/test_service*.py, tests/test_package.py) and bench/bench_service.py.

    with bentoml_serve("service:OmniTiS", env, port) as url:
        s = post_stream(url, json={"text": "What is 3 plus 4?"}, headers=auth)
        s.types, s.text, s.pcm, s.done
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_frame(frame: str) -> tuple[str, dict] | None:
    """One SSE frame (no trailing blank line) -> (event, data); None for a comment-only frame. Strict:
    exactly one ``event:`` and one ``data:`` line holding a JSON object whose ``type`` is the event."""
    lines = [line for line in frame.split("\n") if not line.startswith(":")]
    if not lines:
        return None
    events = [line[len("event: "):] for line in lines if line.startswith("event: ")]
    datas = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    if len(events) != 1 or len(datas) != 1 or len(lines) != 2:
        raise ValueError(f"malformed SSE frame (want one 'event:' and one 'data:' line): {frame[:300]!r}")
    data = json.loads(datas[0])
    if not isinstance(data, dict) or data.get("type") != events[0]:
        raise ValueError(f"SSE data type does not match its event {events[0]!r}: {datas[0][:200]}")
    return events[0], data


@dataclass
class Streamed:
    status: int
    content_type: str
    frames: list[tuple[str, dict, float]] = field(default_factory=list)  # (event, data, seconds after sending)
    body: bytes = b""  # the response body when it was not a stream (errors)
    headers: dict[str, str] = field(default_factory=dict)  # response headers, names in lower case
    keepalives: int = 0

    @property
    def types(self) -> list[str]:
        return [e for e, _, _ in self.frames]

    def of(self, kind: str) -> list[dict]:
        return [d for e, d, _ in self.frames if e == kind]

    def first(self, kind: str) -> float | None:
        return next((t for e, _, t in self.frames if e == kind), None)

    @property
    def text(self) -> str:
        return "".join(d["delta"] for d in self.of("text"))

    @property
    def reasoning(self) -> str:
        return "".join(d["delta"] for d in self.of("reasoning"))

    @property
    def pcm(self) -> bytes:
        import base64

        return b"".join(base64.b64decode(d["pcm16"]) for d in self.of("audio"))

    @property
    def done(self) -> dict | None:
        d = self.of("done")
        return d[0] if d else None

    def json(self) -> Any:
        return json.loads(self.body)


def read_frames(out: Streamed, chunks: Iterator[str], t0: float, stop_after: int | None = None) -> Streamed:
    """Parse SSE text as it arrives into ``out.frames`` (each stamped with seconds since ``t0``); stop
    after ``stop_after`` frames. A stream that ends inside a frame raises."""
    buf = ""
    for chunk in chunks:
        buf += chunk
        while "\n\n" in buf:
            frame, buf = buf.split("\n\n", 1)
            parsed = parse_frame(frame)
            if parsed is None:
                out.keepalives += 1
                continue
            out.frames.append((*parsed, time.perf_counter() - t0))
            if stop_after is not None and len(out.frames) >= stop_after:
                return out
    if buf.strip():
        raise ValueError(f"stream ended inside a frame: {buf[:200]!r}")
    return out


def post_stream(url: str, *, json_body: dict | None = None, files: dict | None = None, data: dict | None = None,
                content: bytes | None = None, headers: dict | None = None, timeout: float = 120,
                client=None, stop_after: int | None = None) -> Streamed:
    """POST to ``url/v1/stream`` and read the SSE frames as they arrive (each timestamped).
    ``stop_after``: close the connection after that many frames (a client that goes away)."""
    import httpx

    own = client is None
    client = client or httpx.Client(timeout=timeout)
    try:
        t0 = time.perf_counter()
        with client.stream("POST", f"{url}/v1/stream", json=json_body, files=files, data=data, content=content,
                           headers=headers or {}) as r:
            out = Streamed(r.status_code, r.headers.get("content-type", ""),
                           headers={k.lower(): v for k, v in r.headers.items()})
            if r.status_code != 200:
                out.body = r.read()
                return out
            return read_frames(out, r.iter_text(), t0, stop_after)
    finally:
        if own:
            client.close()


def lean_connection(url: str, timeout: float = 600):
    """An ``http.client.HTTPConnection`` to ``url`` (``http://host:port``), for ``post_stream_lean``."""
    import http.client

    host, port = url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def post_stream_lean(conn, body: dict, path: str = "/v1/stream", headers: dict | None = None) -> Streamed:
    """POST a JSON ``body`` on ``conn`` (an ``http.client.HTTPConnection``, kept alive between calls) and
    read the whole SSE stream, each frame timestamped: the same strict parsing as ``post_stream``
    without httpx, whose own Python costs ~2 ms per request on a 2-core machine (bench_service
    measures both). Like curl, it sends the request in one write and reads what arrives."""
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn.request("POST", path, body=data,
                 headers={"Content-Type": "application/json", "Accept": "text/event-stream", **(headers or {})})
    r = conn.getresponse()
    out = Streamed(r.status, r.getheader("content-type", ""), headers={k.lower(): v for k, v in r.getheaders()})
    if r.status != 200:
        out.body = r.read()
        return out
    utf8 = codecs.getincrementaldecoder("utf-8")()  # a character may span two reads
    return read_frames(out, (utf8.decode(b) for b in iter(lambda: r.read1(65536), b"")), t0)


@contextlib.contextmanager
def bentoml_serve(target: str, env: dict[str, str], port: int, cwd: Path = ROOT, timeout: float = 180,
                  log_dir: Path | None = None) -> Iterator[str]:
    """``bentoml serve TARGET --port PORT`` (host from the service: 127.0.0.1) until /readyz answers;
    yields the base URL; kills the whole process tree afterwards, whatever happened."""
    import httpx

    try:
        from procs import kill_tree  # under pytest (tests/ is on sys.path)
    except ImportError:
        from tests.procs import kill_tree  # from the repository root (bench)

    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="bentoml-serve-"))
    log = open(log_dir / "serve.log", "w+b")
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env}
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", target, "--port", str(port)], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"bentoml serve not ready after {timeout:.0f}s:\n{_tail(log)}")
            time.sleep(0.3)
        yield url
    finally:
        kill_tree(proc)
        log.close()


def _tail(f, n: int = 6000) -> str:
    f.flush()
    f.seek(0)
    return f.read().decode(errors="replace")[-n:]


def voiced(seconds: float, sr: int = 16000, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Deterministic voiced audio (harmonics on a moving f0, syllable-like bursts); (samples,) or
    (samples, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 160) + 25 * np.sin(2 * np.pi * rng.uniform(0.8, 2.5) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 12) if k * 250 < sr / 2)
    env = np.convolve((np.sin(2 * np.pi * rng.uniform(3, 5) * t) > -0.2).astype(float), np.ones(sr // 100) / (sr // 100),
                      "same")
    w = (0.25 * x * env + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
    if channels > 1:
        w = np.stack([w * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return w


def audio_file(wave: np.ndarray, sr: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()
