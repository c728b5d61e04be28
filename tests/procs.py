"""Process helpers for tests that start subprocesses: nothing a test starts may outlive it."""

from __future__ import annotations

import subprocess


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


DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that trains, without the rank variables an in-process
    ``train()`` left behind (the child would take them for a launcher's and reuse a bound port)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(extra)
    return env
