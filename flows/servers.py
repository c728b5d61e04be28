"""Local Prefect and MLflow servers on 127.0.0.1, started once and reused; `stop` ends them.

State lives in the repository: ``.run/`` (pids, logs, Prefect's SQLite DB) and ``mlflow.db`` +
``mlartifacts/`` (MLflow's SQLite store and artifacts).

    python -m flows.servers start|stop|status
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tasks.core.params import ROOT

RUN = ROOT / ".run"
HOST = os.environ.get("OMNI_TIS_HOST", "127.0.0.1")
PREFECT_PORT = int(os.environ.get("PREFECT_PORT", "4200"))
MLFLOW_PORT = int(os.environ.get("MLFLOW_PORT", "5000"))


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    health: str
    ui: str

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return RUN / f"{self.name}.log"

    def command(self) -> list[str]:
        bindir = Path(sys.executable).parent
        if self.name == "prefect":
            return [str(bindir / "prefect"), "server", "start", "--host", HOST, "--port", str(self.port)]
        return [str(bindir / "mlflow"), "server", "--host", HOST, "--port", str(self.port),
                "--backend-store-uri", f"sqlite:///{ROOT / 'mlflow.db'}",
                "--artifacts-destination", str(ROOT / "mlartifacts"), "--workers", "1"]


PREFECT = Server("prefect", PREFECT_PORT, f"http://{HOST}:{PREFECT_PORT}/api/health", f"http://{HOST}:{PREFECT_PORT}")
MLFLOW = Server("mlflow", MLFLOW_PORT, f"http://{HOST}:{MLFLOW_PORT}/health", f"http://{HOST}:{MLFLOW_PORT}")
SERVERS = (PREFECT, MLFLOW)


def server_env() -> dict[str, str]:
    """Environment for the servers and for everything that talks to them."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(RUN / "prefect"),
        PREFECT_API_URL=f"http://{HOST}:{PREFECT_PORT}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        DO_NOT_TRACK="1",
        MLFLOW_TRACKING_URI=f"http://{HOST}:{MLFLOW_PORT}",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def healthy(s: Server, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(s.health, timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False


def _pid(s: Server) -> int | None:
    try:
        pid = int(s.pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(s: Server, wait: float = 120.0) -> bool:
    """Start ``s`` unless it already answers; returns True if it was started now."""
    if healthy(s):
        return False
    if _pid(s) is None:
        RUN.mkdir(parents=True, exist_ok=True)
        log = open(s.logfile, "ab")
        proc = subprocess.Popen(s.command(), cwd=ROOT, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        s.pidfile.write_text(str(proc.pid))
    deadline = time.time() + wait
    while time.time() < deadline:
        if healthy(s):
            return True
        if _pid(s) is None:
            break
        time.sleep(0.5)
    tail = s.logfile.read_text(errors="replace")[-3000:] if s.logfile.exists() else ""
    raise RuntimeError(f"{s.name} server did not come up on {s.ui} within {wait:.0f}s "
                       f"(port in use by something else? see {s.logfile}):\n{tail}")


def stop(s: Server) -> bool:
    pid = _pid(s)
    if pid is None:
        s.pidfile.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for _ in range(40):
        if _pid(s) is None:
            break
        time.sleep(0.25)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    s.pidfile.unlink(missing_ok=True)
    return True


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    if cmd == "start":
        for s in SERVERS:
            print(f"{s.name}: {'started' if start(s) else 'already running'} at {s.ui}")
    elif cmd == "stop":
        for s in SERVERS:
            print(f"{s.name}: {'stopped' if stop(s) else 'not running (nothing to stop)'}")
    elif cmd == "status":
        for s in SERVERS:
            print(f"{s.name}: {'up' if healthy(s) else 'down'} at {s.ui}")
    else:
        print("usage: python -m flows.servers start|stop|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
