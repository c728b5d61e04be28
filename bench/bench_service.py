"""Service benchmark: the streaming service over HTTP (a real `bentoml serve` on loopback) against the
same session in process, and under concurrent clients.

    .venv/bin/python -m bench.bench_service [--model PACKAGED_DIR] [--hidden 512 --layers 8]
                                            [--policies 1:0,8:0,8:0.5] [--clients 1,4,16,64]
                                            [--max-queue 32] [--out bench/results/service.json]

Without ``--model`` a random Qwen2.5-Omni of ``--hidden`` x ``--layers`` (default the tiny 128 x 2) is
laid out by ``tasks.package.assemble`` with a WORLD codec fitted on espeak speech (tests/audio_data.py);
a random talker never says eos, so every answer speaks ``--audio-seconds``; the numbers are about the
serving path, not answer quality. Both sides run torch on one thread (the bench client shares the 2 cores).

- ``single``: median seconds to the first text and the first audio of a typed question, in process
  (from ``engine.session(...)``) and over HTTP (from sending the POST to reading the SSE frame), and
  their ratio (goal <= 1.3): measured one side after the other, and (``paired_first_text``,
  ``ratio_first_text_paired``) in turn, an answer in process then one over HTTP, so that load from
  other jobs on the machine falls on both sides alike. In turn, HTTP is read by two clients: httpx
  (``ratio_first_text_paired``) and Python's http.client (``ratio_first_text_paired_lean``, the goal's
  number: the service's own cost; httpx adds ~2-3 ms of client work on the same 2 cores).
- ``concurrency[max_active=A,admit_ahead_s=S][clients=C]``: C streams at once, over HTTP (C clients
  each asking back to back, at least 16 streams in all; with ``serve.max_queue`` = ``--max-queue``, so
  past A + Q at once the server refuses) and in process (C sessions submitted at once to the same
  scheduler, serve/scheduler.py, no HTTP): p50/p95 seconds to the first text and the first audio,
  aggregate thinker positions per second (tokens/s), streams/s, audio gaps per answer (the session's
  count: playback from the first chunk at real time stalls), and the refusals: 429/503 counts and
  their Retry-After (p50/max seconds). ``max_active=1`` is one session at a time (moshi's lock); more
  step together on the one model thread (one batched forward per round, models/runner.py), and
  ``admit_ahead_s`` > 0 starts another only while every running answer has that much audio buffered.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples does he have?",
             "A box holds 12 pens. How many pens are in 5 boxes?",
             "What is 45 minus 17?",
             "Sara reads 20 pages a day. How many pages does she read in a week?"]


def pct(xs: list[float], q: float) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 4)


def build_model(out: Path, hidden: int, layers: int) -> Path:
    from tasks.core.params import load_params
    from tasks.package import assemble
    from tests.audio_data import make_init, tiny_setup

    t = tiny_setup()  # codec fitted on espeak speech (+ a tiny init we may not use)
    init = t.init
    if (hidden, layers) != (128, 2):
        heads = max(2, hidden // 64)
        p = load_params(overrides={"model": {"tiny": {"hidden_size": hidden, "num_hidden_layers": layers,
                                                      "num_attention_heads": heads, "num_key_value_heads": 2,
                                                      "intermediate_size": 4 * hidden}}})
        init = out / "init"
        make_init(init, p)
    assemble(out / "model", init, t.codec, {}, ROOT / "params.yaml", {"speak": 2, "think": 8})
    return out / "model"


def session_options(opts: dict, audio_seconds: float):
    from models.session import Options

    return Options(max_new_tokens=opts["max_new_tokens"], temperature=0.0, seed=0, reasoning=True,
                   max_audio_seconds=audio_seconds)


def answer_in_process(engine, question: str, options) -> tuple[float, float, float]:
    """Seconds from ``engine.session(...)`` to the first text, to the first audio, and to the end."""
    t0 = time.perf_counter()
    ft = fa = None
    for ev in engine.session(text=question, options=options):
        now = time.perf_counter() - t0
        if ev.type == "text" and ft is None:
            ft = now
        elif ev.type == "audio" and fa is None:
            fa = now
    return ft, fa, time.perf_counter() - t0


def in_process(model_dir: Path, opts: dict, repeats: int, audio_seconds: float) -> dict:
    import torch

    from models.session import Engine

    torch.set_num_threads(1)
    engine = Engine.load(model_dir, model_dir / "codec")
    engine.warmup()
    o = session_options(opts, audio_seconds)
    first_text, first_audio, total = [], [], []
    for i in range(repeats + 1):
        ft, fa, seconds = answer_in_process(engine, QUESTIONS[i % len(QUESTIONS)], o)
        if i:  # the first one is a warm-up
            first_text.append(ft)
            first_audio.append(fa)
            total.append(seconds)
    n_params = sum(p.numel() for p in engine.model.thinker.parameters())
    return {"seconds_to_first_text": statistics.median(first_text),
            "seconds_to_first_audio": statistics.median(first_audio), "seconds": statistics.median(total),
            "thinker_params": n_params}, engine


def http_runs(url: str, opts: dict, clients: int, per_client: int) -> list:
    """[wall seconds, answered streams, refused responses (429/503)]; any other outcome raises."""
    import httpx

    from tests.service_client import post_stream

    results: list = []
    refused: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=4)) as c:
            barrier.wait()
            for j in range(per_client):
                q = QUESTIONS[(k + j) % len(QUESTIONS)]
                s = post_stream(url, json_body={"text": q, "options": opts}, client=c)
                with lock:
                    (refused if s.status in (429, 503) else results).append(s)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    bad = [s for s in results if s.status != 200 or s.types[-1:] != ["done"]]
    if bad:
        raise RuntimeError(f"{len(bad)} streams failed: {bad[0].status} {bad[0].body[:300]!r} {bad[0].types[-3:]}")
    return [wall, results, refused]


def paired_first_text(url: str, engine, opts: dict, repeats: int, audio_seconds: float) -> dict:
    """First text in process and over HTTP, taken in turn (the server idles while this process steps,
    and the other way round): each round meets the same load, so a machine whose load drifts (another
    job on the cores) moves both sides of a ratio alike. The sequential numbers beside these (in
    process first, the server minutes later) measure that drift too.

    Over HTTP with two clients on kept-alive connections: httpx (``ratio``), and ``post_stream_lean``
    (``ratio_lean``: Python's http.client, one write per request, as curl sends it). Their difference is
    the client library's own work, which shares the 2 cores with the server; the lean one is the
    service's cost (the goal's), httpx's is what a Python client built on it pays."""
    import httpx

    from tests.service_client import lean_connection, post_stream, post_stream_lean

    o = session_options(opts, audio_seconds)
    local, http_, lean = [], [], []
    conn = lean_connection(url)
    with httpx.Client(timeout=600) as c:
        post_stream_lean(conn, {"text": QUESTIONS[0], "options": opts})  # the connection, warm
        for i in range(repeats):
            q = QUESTIONS[i % len(QUESTIONS)]
            local.append(answer_in_process(engine, q, o)[0])
            http_.append(post_stream(url, json_body={"text": q, "options": opts}, client=c).first("text"))
            s = post_stream_lean(conn, {"text": q, "options": opts})
            if s.status != 200 or s.types[-1:] != ["done"]:
                raise RuntimeError(f"lean client: {s.status} {s.body[:300]!r} {s.types[-3:]}")
            lean.append(s.first("text"))
    conn.close()
    ratios = [h / p for h, p in zip(http_, local)]
    ratios_lean = [h / p for h, p in zip(lean, local)]
    med = statistics.median
    return {"in_process_seconds": round(med(local), 5), "http_seconds": round(med(http_), 5),
            "lean_http_seconds": round(med(lean), 5),
            "ratio": round(med(http_) / med(local), 3), "ratio_lean": round(med(lean) / med(local), 3),
            "pair_ratio_p25": pct(ratios, 0.25), "pair_ratio_p50": pct(ratios, 0.5), "pair_ratio_p75": pct(ratios, 0.75),
            "lean_pair_ratio_p25": pct(ratios_lean, 0.25), "lean_pair_ratio_p50": pct(ratios_lean, 0.5),
            "lean_pair_ratio_p75": pct(ratios_lean, 0.75)}


def in_process_concurrent(engine, opts: dict, clients: int, max_active: int, admit: float, max_queue: int,
                          audio_seconds: float) -> dict:
    """``clients`` sessions submitted at once to the service's scheduler in this process (the model
    thread the service runs, without HTTP): seconds from submitting to each one's first text and first
    audio, aggregate thinker positions per second, and how many the line refused."""
    import asyncio

    from models.session import Options, step_all
    from serve.scheduler import Busy, Job, Scheduler

    o = Options(max_new_tokens=opts["max_new_tokens"], temperature=0.0, seed=0, reasoning=True,
                max_audio_seconds=audio_seconds)

    async def run() -> dict:
        sched = Scheduler(max_active, max_queue, admit, step_batch=step_all)  # as serve/runtime.py
        loop = asyncio.get_running_loop()
        # Sessions made first, then all submitted at once: the burst the line sees is exactly `clients`.
        sessions = [engine.session(text=QUESTIONS[k % len(QUESTIONS)], options=o) for k in range(clients)]
        t0 = time.perf_counter()
        jobs, refused = [], 0
        for k, session in enumerate(sessions):
            job = Job(str(k), session, loop)
            try:
                sched.submit(job)
                jobs.append(job)
            except Busy:
                job.session.close()
                refused += 1

        async def drain(job) -> dict:
            first: dict[str, float] = {}
            positions = 0
            while (batch := await job.queue.get()) is not None:
                for ev in batch:
                    first.setdefault(ev.type, time.perf_counter() - t0)
                    if ev.type == "done":
                        positions = ev.timings["thinker_positions"]
            return {"text": first.get("text"), "audio": first.get("audio"), "positions": positions}

        got = await asyncio.gather(*(drain(j) for j in jobs))
        wall = time.perf_counter() - t0
        await asyncio.to_thread(sched.close)
        return {"streams": len(got), "refused": refused, "wall_seconds": round(wall, 3),
                "first_text_p50": pct([g["text"] for g in got], 0.5), "first_text_p95": pct([g["text"] for g in got], 0.95),
                "first_audio_p50": pct([g["audio"] for g in got], 0.5),
                "first_audio_p95": pct([g["audio"] for g in got], 0.95),
                "tokens_per_s": round(sum(g["positions"] for g in got) / wall, 1)}

    return asyncio.run(run())


def http_floor(url: str, n: int) -> float:
    """Median round trip of ``GET /v1/health`` (a small JSON answer that touches no model) on one kept-alive
    connection: what the HTTP stack itself costs, the floor under any first-text time over HTTP."""
    import httpx

    times = []
    with httpx.Client(timeout=30) as c:
        c.get(f"{url}/v1/health")
        for _ in range(n):
            t0 = time.perf_counter()
            c.get(f"{url}/v1/health").raise_for_status()
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 5)


def serve_and_measure(model_dir: Path, params: Path, max_active: int, admit: float, opts: dict, repeats: int,
                      levels: list[int], log_dir: Path, max_queue: int, engine, audio_seconds: float) -> dict:
    import yaml

    from tests.service_client import bentoml_serve, free_port

    data = yaml.safe_load(params.read_text())
    data["serve"].update(max_active=max_active, admit_ahead_s=admit, max_queue=max_queue)
    p = log_dir / f"params-{max_active}-{admit}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {"OMNI_TIS_MODEL_DIR": str(model_dir), "OMNI_TIS_PARAMS": str(p), "OMP_NUM_THREADS": "1",
           "BENTOML_HOME": str(log_dir / "bentoml")}
    out: dict = {}
    with bentoml_serve("service:OmniTiS", env, free_port(), log_dir=log_dir) as url:
        http_runs(url, opts, 1, 2)  # warm-up (first connection, first request)
        _, single, _ = http_runs(url, opts, 1, repeats)
        out["single"] = {"http_floor_seconds": http_floor(url, repeats * 4),
                         "seconds_to_first_text": statistics.median(s.first("text") for s in single),
                         # the server's own view from the request's arrival (done.timings.request): reading and
                         # checking the body + making the session, then the first text frame
                         "server_setup_seconds": statistics.median(s.done["timings"]["request"]["setup_seconds"]
                                                                   for s in single),
                         "server_first_text_seconds": statistics.median(
                             s.done["timings"]["request"]["seconds_to_first_text"] for s in single),
                         "seconds_to_first_audio": statistics.median(s.first("audio") for s in single),
                         "seconds": statistics.median(s.first("done") for s in single),
                         "paired_first_text": paired_first_text(url, engine, opts, repeats * 2, audio_seconds)}
        for c in levels:
            wall, res, refused = http_runs(url, opts, c, max(1, 16 // c) if c < 16 else 1)
            ft = [s.first("text") for s in res]
            fa = [s.first("audio") for s in res]
            done = [s.first("done") for s in res]
            gaps = [s.done["timings"]["audio_gaps"] for s in res]
            retry = [float(r.headers.get("retry-after", "nan")) for r in refused]
            out[f"clients={c}"] = {
                "http": {"streams": len(res), "wall_seconds": round(wall, 3),
                         "streams_per_s": round(len(res) / wall, 3),
                         "tokens_per_s": round(sum(s.done["timings"]["thinker_positions"] for s in res) / wall, 1),
                         "first_text_p50": pct(ft, 0.5), "first_text_p95": pct(ft, 0.95),
                         "first_audio_p50": pct(fa, 0.5), "first_audio_p95": pct(fa, 0.95),
                         "done_p50": pct(done, 0.5), "done_p95": pct(done, 0.95),
                         "audio_gaps_mean": round(statistics.mean(gaps), 2),
                         "queue_seconds_p95": pct([s.done["timings"]["request"]["queue_seconds"] for s in res], 0.95),
                         "refused_429": sum(r.status == 429 for r in refused),
                         "refused_503": sum(r.status == 503 for r in refused),
                         "retry_after_p50": pct(retry, 0.5), "retry_after_max": max(retry, default=None)},
                "in_process": in_process_concurrent(engine, opts, c, max_active, admit, max_queue, audio_seconds)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="a packaged model dir (tasks.package.assemble)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--audio-seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--policies", default="1:0,8:0,8:0.5",
                    help="comma-separated serve.max_active:serve.admit_ahead_s pairs, one server each")
    ap.add_argument("--clients", default="1,4,16,64", help="streams at once, comma-separated")
    ap.add_argument("--max-queue", type=int, default=32, help="serve.max_queue: past max_active + this, 503")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))

    import yaml

    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    model_dir = args.model or build_model(work, args.hidden, args.layers)
    params = work / "params.yaml"
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["serve"].update(max_audio_seconds=args.audio_seconds, token_env="")
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    opts = {"max_new_tokens": args.max_new_tokens, "show_reasoning": True}

    inproc, engine = in_process(model_dir, opts, args.repeats, args.audio_seconds)
    print(f"in process: first text {inproc['seconds_to_first_text'] * 1e3:.1f} ms, first audio "
          f"{inproc['seconds_to_first_audio'] * 1e3:.1f} ms, whole answer {inproc['seconds']:.2f} s", flush=True)
    levels = [int(x) for x in args.clients.split(",")]
    conc = {}
    for pol in args.policies.split(","):
        a, admit = int(pol.split(":")[0]), float(pol.split(":")[1])
        name = f"max_active={a},admit_ahead_s={admit:g}"
        conc[name] = serve_and_measure(model_dir, params, a, admit, opts, args.repeats, levels, work,
                                       args.max_queue, engine, args.audio_seconds)
        s = conc[name]
        print(f"{name}: HTTP first text {s['single']['seconds_to_first_text'] * 1e3:.1f} ms, first audio "
              f"{s['single']['seconds_to_first_audio'] * 1e3:.1f} ms; the HTTP floor (GET /v1/health round trip) "
              f"{s['single']['http_floor_seconds'] * 1e3:.1f} ms; seen by the server from the request's arrival: "
              f"setup {s['single']['server_setup_seconds'] * 1e3:.1f} ms, first text "
              f"{s['single']['server_first_text_seconds'] * 1e3:.1f} ms", flush=True)
        pf = s["single"]["paired_first_text"]
        print(f"  first text in turn (in process, HTTP with httpx, HTTP with http.client): "
              f"{pf['in_process_seconds'] * 1e3:.1f} / {pf['http_seconds'] * 1e3:.1f} / {pf['lean_http_seconds'] * 1e3:.1f} "
              f"ms, x{pf['ratio']} (pairs p25/p50/p75 {pf['pair_ratio_p25']}/{pf['pair_ratio_p50']}/"
              f"{pf['pair_ratio_p75']}) and x{pf['ratio_lean']} ({pf['lean_pair_ratio_p25']}/"
              f"{pf['lean_pair_ratio_p50']}/{pf['lean_pair_ratio_p75']})", flush=True)
        for c in levels:
            h, i = s[f"clients={c}"]["http"], s[f"clients={c}"]["in_process"]
            print(f"  {c:>3} at once: HTTP {h['streams']} answered, {h['refused_429']} x 429, {h['refused_503']} x 503 "
                  f"(Retry-After p50 {h['retry_after_p50']}), {h['tokens_per_s']:.0f} tokens/s, first text p50/p95 "
                  f"{h['first_text_p50']}/{h['first_text_p95']} s, first audio p50/p95 {h['first_audio_p50']}/"
                  f"{h['first_audio_p95']} s, gaps {h['audio_gaps_mean']:.1f} | in process {i['streams']} answered, "
                  f"{i['refused']} refused, {i['tokens_per_s']:.0f} tokens/s, first text p50/p95 {i['first_text_p50']}/"
                  f"{i['first_text_p95']} s, first audio p50/p95 {i['first_audio_p50']}/{i['first_audio_p95']} s",
                  flush=True)
    http = conc[next(iter(conc))]["single"]
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "model": {"dir": str(model_dir), "hidden": args.hidden, "layers": args.layers,
                  "thinker_params": inproc["thinker_params"], "max_new_tokens": args.max_new_tokens,
                  "audio_seconds": args.audio_seconds, "max_queue": args.max_queue},
        "single": {"in_process": {k: round(v, 4) for k, v in inproc.items() if k != "thinker_params"},
                   "http": {k: v if isinstance(v, dict) else round(v, 4) for k, v in http.items()},
                   "ratio_first_text": round(http["seconds_to_first_text"] / inproc["seconds_to_first_text"], 3),
                   "ratio_first_text_paired": http["paired_first_text"]["ratio"],
                   "ratio_first_text_paired_lean": http["paired_first_text"]["ratio_lean"],
                   "ratio_first_audio": round(http["seconds_to_first_audio"] / inproc["seconds_to_first_audio"], 3),
                   "goal_ratio": 1.3},
        "concurrency": conc,
    }
    print(f"HTTP / in process: first text x{result['single']['ratio_first_text']} (in turn: "
          f"x{result['single']['ratio_first_text_paired']} httpx, x{result['single']['ratio_first_text_paired_lean']} "
          f"http.client), first audio x{result['single']['ratio_first_audio']} "
          f"(goal <= 1.3)")
    from models.atomic import write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
