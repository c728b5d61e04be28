"""The cores a stage may use while other stages run beside it.

The pipeline flow runs independent stages at once (``flow.parallel``: the two formats' chains, the codec beside
align and pretrain) and splits the machine's cores between them: it writes each running stage's share to a
file and names it in ``OMNI_TIS_CPU_SHARE``. A stage reads its share when it starts (torch threads, worker
processes) and follows it while it trains, so a stage left alone gets every core back. Without the variable
(a stage run by hand, ``dvc repro``) nothing changes: torch's own default.

    share = CpuShare()            # reads OMNI_TIS_CPU_SHARE, if set
    share.apply()                 # torch.set_num_threads(share) when it changed; cheap to call every step
    workers = share.cores() or os.cpu_count()
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from models.atomic import write_text

ENV = "OMNI_TIS_CPU_SHARE"
log = logging.getLogger("cpu")


def machine_cores() -> int:
    """The cores there are to lend: physical ones, as torch's default threads count them (hyperthreads do not speed
    up its matrix work)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def write_share(path: str | Path, cores: int) -> None:
    """Lend ``cores`` to the stage that follows ``path`` (atomic: a reader never sees half a number)."""
    if cores < 1:
        raise ValueError(f"a stage needs at least one core, got {cores}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, f"{cores}\n")


class CpuShare:
    """The share named by ``OMNI_TIS_CPU_SHARE`` (``path`` overrides it), re-read at most every ``every`` seconds."""

    def __init__(self, path: str | Path | None = None, every: float = 2.0):
        env = os.environ.get(ENV, "")
        self.path = Path(path) if path is not None else (Path(env) if env else None)
        self.every = every
        self._read_at = float("-inf")
        self._cores: int | None = None
        self._applied: int | None = None

    def cores(self) -> int | None:
        """The cores lent now, or None when no flow lends any (or the file is unreadable: keep what we had)."""
        if self.path is None:
            return None
        now = time.monotonic()
        if now - self._read_at >= self.every:
            self._read_at = now
            try:
                n = int(self.path.read_text().strip())
            except (OSError, ValueError):
                return self._cores
            if n >= 1:
                self._cores = n
        return self._cores

    def apply(self) -> int | None:
        """Set torch's threads to the share when it changed; returns the share (None: untouched)."""
        n = self.cores()
        if n is not None and n != self._applied:
            import torch

            torch.set_num_threads(n)
            if self._applied is not None:
                log.info("cores lent to this stage: %d -> %d", self._applied, n)
            self._applied = n
        return n
