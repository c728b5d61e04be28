"""The packaged model's manifest, ``omni_tis.json``: written by the package stage (``tasks/package.py``),
read by the service (``serve/runtime.py``). One typed record, so the two sides cannot drift apart.
It lives in models/ because both layers may import it (models/ imports neither).

    from models.manifest import Manifest
    m = Manifest.read("path/to/packaged/model")   # FileNotFoundError / ManifestError name the problem
    m.format, m.schedule, m.fingerprint
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE = "omni_tis.json"
FORMATS = ("tis", "think_first")


class ManifestError(ValueError):
    """An ``omni_tis.json`` that is not what the package stage writes."""


@dataclass(frozen=True)
class Schedule:
    speak: int  # response tokens per block
    think: int  # reasoning tokens per block

    def __post_init__(self) -> None:
        for k in ("speak", "think"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ManifestError(f"schedule.{k} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True)
class Manifest:
    """What a packaged model directory holds and where it came from."""

    format: str  # the sequence format the model was trained on ("tis" for the product)
    schedule: Schedule  # the speak/think schedule it was trained with (the service's default)
    checkpoint: str  # the training stage's step directory it was copied from
    codec: bool  # whether codec/ is there (False: text only)
    fingerprint: str  # sha256 over the weights, tokenizer, codec, metrics and params
    git: dict[str, Any] | None = field(default=None)  # {"commit", "dirty"} of the repository that packaged it
    dvc: dict[str, Any] | None = field(default=None)  # {"lock_sha256", "outs"}: DVC's hashes of the inputs

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ManifestError(f"format must be one of {FORMATS}, got {self.format!r}")
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise ManifestError("fingerprint must be a non-empty string")
        if not isinstance(self.codec, bool):
            raise ManifestError(f"codec must be true or false, got {self.codec!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (git and dvc left out when unknown)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any, where: str = FILE) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: want a JSON object, got {type(data).__name__}")
        known = {"format", "schedule", "checkpoint", "codec", "fingerprint", "git", "dvc"}
        missing = sorted({"format", "schedule", "checkpoint", "codec", "fingerprint"} - set(data))
        unknown = sorted(set(data) - known)
        if missing or unknown:
            raise ManifestError(f"{where}: missing {missing}, unknown {unknown}; rebuild it with "
                                "`python -m tasks.package` (or tasks.package.assemble)")
        s = data["schedule"]
        if not isinstance(s, dict) or set(s) != {"speak", "think"}:
            raise ManifestError(f"{where}: schedule must be {{\"speak\": int, \"think\": int}}, got {s!r}")
        try:
            return cls(format=data["format"], schedule=Schedule(s["speak"], s["think"]),
                       checkpoint=str(data["checkpoint"]), codec=data["codec"], fingerprint=data["fingerprint"],
                       git=data.get("git"), dvc=data.get("dvc"))
        except ManifestError as e:
            raise ManifestError(f"{where}: {e}") from None

    def write(self, directory: str | Path) -> Path:
        """``directory/omni_tis.json``, atomically."""
        from models.atomic import write_text

        return write_text(Path(directory) / FILE, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        path = Path(directory) / FILE
        if not path.exists():
            raise FileNotFoundError(f"{directory} is not a packaged omni-tis model (no {FILE}); build one with "
                                    "`python -m tasks.package` or tasks.package.assemble(...)")
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise ManifestError(f"{path} is not valid JSON ({e}); rebuild it with `python -m tasks.package`") from None
        return cls.from_dict(data, str(path))
