"""Atomic file and directory writes: the one place the project writes outputs that must never be half
there. Everything goes to a temporary sibling first and is renamed into place, so a kill leaves the old
version or the new one, never a mix.

    write_json(path, data)                   # also write_text / write_bytes / write_with(path, fn)
    with atomic_dir(out_dir) as tmp:         # build a directory in tmp; it replaces out_dir on exit
        (tmp / "weights.bin").write_bytes(...)

Temporary names start with ``.`` and contain ``.tmp``, so ``remove_partial`` (and humans) can tell
them from finished outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _tmp_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def write_with(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)``, then rename the temp file to ``path``; on error nothing changes."""
    path = Path(path)
    tmp = _tmp_file(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda t: t.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_with(path, lambda t: t.write_text(text))


def write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    return write_text(path, json.dumps(data, indent=indent, sort_keys=True, default=str) + "\n")


def replace_dir(src: str | Path, dst: str | Path) -> Path:
    """Put the finished directory ``src`` at ``dst``. An existing ``dst`` is first renamed aside and
    deleted only after ``src`` is in place, so a kill in between leaves a complete old or new copy."""
    src, dst = Path(src), Path(dst)
    os.chmod(src, 0o755)  # mkdtemp makes 0700 dirs
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst


@contextlib.contextmanager
def atomic_dir(dst: str | Path) -> Iterator[Path]:
    """Yield an empty temp directory next to ``dst``; on a clean exit it replaces ``dst``, on an
    exception it is deleted and ``dst`` is left as it was."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        yield tmp
        replace_dir(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_partial(path: Path) -> bool:
    """A leftover temp file or directory of this module (from a killed writer)."""
    return path.name.startswith(".") and ".tmp" in path.name


def remove_partial(folder: str | Path) -> list[Path]:
    """Delete the temp leftovers directly inside ``folder``; returns what was removed."""
    folder = Path(folder)
    gone = []
    if folder.is_dir():
        for p in folder.iterdir():
            if is_partial(p):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                gone.append(p)
    return gone
