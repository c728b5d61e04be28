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
