"""What `make pipeline` runs: servers up, deployment served, `prefect deployment run`, results printed.

1. starts the Prefect and MLflow servers on 127.0.0.1 unless they already answer (they stay up);
2. serves the `full-pipeline/local` deployment in a background process, for this run only;
3. runs ``prefect deployment run full-pipeline/local --watch`` and streams the flow's log lines;
4. prints the stage results and where to look; stops the serving process (also on Ctrl-C).

    python -m flows.run_pipeline
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tasks.core.params import ROOT

from flows.serve import DEPLOYMENT
from flows.servers import MLFLOW, PREFECT, RUN, SERVERS, server_env, start

NAME = f"full-pipeline/{DEPLOYMENT}"
RESULTS = RUN / "last_pipeline.json"


def kill_tree(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate ``proc`` and all its children (then kill what is left); no-op when already gone."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _tail(path: Path, stop: threading.Event, start_at: int) -> None:
    """Echo the serving process's log (the flow's and stages' log lines) while we wait."""
    with open(path, "r", errors="replace") as f:
        f.seek(start_at)
        while not stop.is_set():
            line = f.readline()
            if line:
                sys.stdout.write("  " + line)
                sys.stdout.flush()
            else:
                time.sleep(0.3)


def _wait_for_deployment(env: dict[str, str], serve: subprocess.Popen, timeout: float = 120) -> None:
    prefect = str(Path(sys.executable).parent / "prefect")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if serve.poll() is not None:
            raise RuntimeError(f"the serving process exited ({serve.returncode}); see {RUN / 'serve.log'}")
        r = subprocess.run([prefect, "deployment", "inspect", NAME], env=env, capture_output=True, text=True)
        if r.returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError(f"deployment {NAME} did not appear within {timeout:.0f}s; see {RUN / 'serve.log'}")


def main() -> int:
    t0 = time.time()
    for s in SERVERS:
        state = "started" if start(s) else "reused"
        print(f"[pipeline] {s.name} server {state}: {s.ui}", flush=True)
    env = server_env()
    RUN.mkdir(exist_ok=True)
    log_path = RUN / "serve.log"
    log_path.touch()
    offset = log_path.stat().st_size
    RESULTS.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    stop_tail = threading.Event()
    tail = threading.Thread(target=_tail, args=(log_path, stop_tail, offset), daemon=True)

    def interrupted(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    rc, r = 1, None
    try:
        _wait_for_deployment(env, serve)
        print(f"[pipeline] deployment {NAME} served; running it", flush=True)
        tail.start()
        r = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run", NAME, "--watch",
                            "--watch-interval", "2"], env=env, cwd=ROOT, capture_output=True, text=True)
        rc = r.returncode
        time.sleep(1)  # let the last log lines arrive
    except KeyboardInterrupt:
        print("\n[pipeline] interrupted: stopping the flow run; a rerun resumes from the last checkpoint",
              flush=True)
        rc = 130
    finally:
        stop_tail.set()
        kill_tree(serve)
    out = r.stdout if r is not None else ""
    flow_run = next((ln.split()[-1] for ln in out.splitlines() if "UUID" in ln), "")
    print()
    if RESULTS.exists():
        results = json.loads(RESULTS.read_text())
        print("[pipeline] stage results:")
        for x in results["stages"]:
            print(f"    {x['stage']:<26} {x['status']:<8} {x['seconds']:>7.1f}s")
        print(f"[pipeline] pipeline time {results['seconds']:.1f}s (total with start-up {time.time() - t0:.1f}s)")
    if rc not in (0, 130):
        said = f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}" if r is not None else f"see {log_path}"
        print(f"[pipeline] FAILED (exit {rc}). prefect said:\n{said}")
    table = ROOT / "reports" / "compare" / "table.md"
    if rc == 0 and table.exists():
        print(f"[pipeline] TiS vs think-first ({table.relative_to(ROOT)}):")
        print(table.read_text().rstrip())
    print(f"[pipeline] Prefect UI: {PREFECT.ui}" + (f"/runs/flow-run/{flow_run}" if flow_run else ""))
    print(f"[pipeline] MLflow UI:  {MLFLOW.ui}  (experiment 'omni-tis')")
    print("[pipeline] servers keep running for browsing; `make stop` ends them")
    return rc


if __name__ == "__main__":
    sys.exit(main())
