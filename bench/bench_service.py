"""Service benchmark: the streaming service over HTTP (a real `bentoml serve` on loopback) against the
same session in process, and under concurrent clients.

    .venv/bin/python -m bench.bench_service [--model PACKAGED_DIR] [--hidden 512 --layers 8]
                                            [--policies 1:0,8:0,8:0.5] [--out bench/results/service.json]

Without ``--model`` a random Qwen2.5-Omni of ``--hidden`` x ``--layers`` (default the tiny 128 x 2) is
laid out by ``tasks.package.assemble`` with a WORLD codec fitted on espeak speech (tests/audio_data.py);
a random talker never says eos, so every answer speaks ``--audio-seconds``; the numbers are about the
serving path, not answer quality. Both sides run torch on one thread (the bench client shares the 2 cores).

- ``single``: median seconds to the first text and the first audio of a typed question, in process
  (from ``engine.session(...)``) and over HTTP (from sending the POST to reading the SSE frame), and
  their ratio (goal <= 1.3).
- ``concurrency[max_active=A,admit_ahead_s=S][clients=C]``: C clients each asking back to back (at
  least 16 streams in all): streams/s, p50/p95 seconds to the first audio and to done, audio gaps per
  answer (the session's count: playback from the first chunk at real time stalls). ``max_active=1``
  is one session at a time (moshi's lock); more interleave sessions on the one model thread, and
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


def in_process(model_dir: Path, opts: dict, repeats: int, audio_seconds: float) -> dict:
    import torch

    from models.session import Engine, Options

    torch.set_num_threads(1)
    engine = Engine.load(model_dir, model_dir / "codec")
    engine.warmup()
    o = Options(max_new_tokens=opts["max_new_tokens"], temperature=0.0, seed=0, reasoning=True,
                max_audio_seconds=audio_seconds)
    first_text, first_audio, total = [], [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        ft = fa = None
        for ev in engine.session(text=QUESTIONS[i % len(QUESTIONS)], options=o):
            now = time.perf_counter() - t0
            if ev.type == "text" and ft is None:
                ft = now
            elif ev.type == "audio" and fa is None:
                fa = now
        if i:  # the first one is a warm-up
            first_text.append(ft)
            first_audio.append(fa)
            total.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in engine.model.thinker.parameters())
    return {"seconds_to_first_text": statistics.median(first_text),
            "seconds_to_first_audio": statistics.median(first_audio), "seconds": statistics.median(total),
            "thinker_params": n_params}


def http_runs(url: str, opts: dict, clients: int, per_client: int) -> list:
    import httpx

    from tests.service_client import post_stream

    results: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as c:
            barrier.wait()
            for j in range(per_client):
                q = QUESTIONS[(k + j) % len(QUESTIONS)]
                s = post_stream(url, json_body={"text": q, "options": opts}, client=c)
                with lock:
                    results.append(s)

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
    return [wall, results]


def serve_and_measure(model_dir: Path, params: Path, max_active: int, admit: float, opts: dict, repeats: int,
                      levels: list[int], log_dir: Path) -> dict:
    import yaml

    from tests.service_client import bentoml_serve, free_port

    data = yaml.safe_load(params.read_text())
    data["serve"].update(max_active=max_active, admit_ahead_s=admit, max_queue=256)
    p = log_dir / f"params-{max_active}-{admit}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {"OMNI_TIS_MODEL_DIR": str(model_dir), "OMNI_TIS_PARAMS": str(p), "OMP_NUM_THREADS": "1",
           "BENTOML_HOME": str(log_dir / "bentoml")}
    out: dict = {}
    with bentoml_serve("service:OmniTiS", env, free_port(), log_dir=log_dir) as url:
        http_runs(url, opts, 1, 2)  # warm-up (first connection, first request)
        _, single = http_runs(url, opts, 1, repeats)
        out["single"] = {"seconds_to_first_text": statistics.median(s.first("text") for s in single),
                         "seconds_to_first_audio": statistics.median(s.first("audio") for s in single),
                         "seconds": statistics.median(s.first("done") for s in single)}
        for c in levels:
            wall, res = http_runs(url, opts, c, max(1, 16 // c) if c < 16 else 1)
            fa = [s.first("audio") for s in res]
            done = [s.first("done") for s in res]
            gaps = [s.done["timings"]["audio_gaps"] for s in res]
            out[f"clients={c}"] = {"streams": len(res), "wall_seconds": round(wall, 3),
                                   "streams_per_s": round(len(res) / wall, 3),
                                   "first_audio_p50": pct(fa, 0.5), "first_audio_p95": pct(fa, 0.95),
                                   "done_p50": pct(done, 0.5), "done_p95": pct(done, 0.95),
                                   "audio_gaps_mean": round(statistics.mean(gaps), 2),
                                   "queue_seconds_p95": pct([s.done["timings"]["request"]["queue_seconds"]
                                                             for s in res], 0.95)}
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
    ap.add_argument("--clients", default="1,4,16")
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

    inproc = in_process(model_dir, opts, args.repeats, args.audio_seconds)
    print(f"in process: first text {inproc['seconds_to_first_text'] * 1e3:.1f} ms, first audio "
          f"{inproc['seconds_to_first_audio'] * 1e3:.1f} ms, whole answer {inproc['seconds']:.2f} s", flush=True)
    levels = [int(x) for x in args.clients.split(",")]
    conc = {}
    for pol in args.policies.split(","):
        a, admit = int(pol.split(":")[0]), float(pol.split(":")[1])
        name = f"max_active={a},admit_ahead_s={admit:g}"
        conc[name] = serve_and_measure(model_dir, params, a, admit, opts, args.repeats, levels, work)
        s = conc[name]
        print(f"{name}: HTTP first text {s['single']['seconds_to_first_text'] * 1e3:.1f} ms, first audio "
              f"{s['single']['seconds_to_first_audio'] * 1e3:.1f} ms; " + "; ".join(
                  f"{c} clients {s[f'clients={c}']['streams_per_s']:.2f} streams/s, first audio p50/p95 "
                  f"{s[f'clients={c}']['first_audio_p50']:.3f}/{s[f'clients={c}']['first_audio_p95']:.3f} s, "
                  f"gaps {s[f'clients={c}']['audio_gaps_mean']:.1f}"
                  for c in levels), flush=True)
    http = conc[next(iter(conc))]["single"]
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "model": {"dir": str(model_dir), "hidden": args.hidden, "layers": args.layers,
                  "thinker_params": inproc["thinker_params"], "max_new_tokens": args.max_new_tokens,
                  "audio_seconds": args.audio_seconds},
        "single": {"in_process": {k: round(v, 4) for k, v in inproc.items() if k != "thinker_params"},
                   "http": {k: round(v, 4) for k, v in http.items()},
                   "ratio_first_text": round(http["seconds_to_first_text"] / inproc["seconds_to_first_text"], 3),
                   "ratio_first_audio": round(http["seconds_to_first_audio"] / inproc["seconds_to_first_audio"], 3),
                   "goal_ratio": 1.3},
        "concurrency": conc,
    }
    print(f"HTTP / in process: first text x{result['single']['ratio_first_text']}, first audio "
          f"x{result['single']['ratio_first_audio']} (goal <= 1.3)")
    from models.atomic import write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
