"""Process helpers for tests that start subprocesses: nothing a test starts may outlive it."""

from __future__ import annotations

from flows.run_pipeline import kill_tree  # noqa: F401 - the one process-tree killer

DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that trains, without the rank variables an in-process
    ``train()`` left behind (the child would take them for a launcher's and reuse a bound port)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(extra)
    return env
