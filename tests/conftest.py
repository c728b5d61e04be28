"""Shared fixtures: a tiny tokenizer + model, and a throwaway copy of the repository.

Tests never touch the working tree's data/, checkpoints/ or mlflow.db: the pipeline tests copy the
repository (tracked and untracked, not ignored files) into a temporary folder with tiny params.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Real GSM8K/SVAMP sit beside the clone (never inside it), or where OMNI_TIS_SHARED_DATA points.
SHARED_DATA = Path(os.environ.get("OMNI_TIS_SHARED_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")  # session scope: checked before any module fixture reads the data
def shared_data_present():
    """Missing locally: skip; missing in CI: fail, so a green CI cannot hide that the real-data tests
    never ran."""
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").exists():
        msg = (f"the real GSM8K/SVAMP test data is not at {SHARED_DATA}: put the shared/ folder beside the "
               "checkout (shared/data/gsm8k, shared/data/svamp) or set OMNI_TIS_SHARED_DATA to its data folder")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


needs_shared_data = pytest.mark.usefixtures("shared_data_present")
os.environ.setdefault("OMNI_TIS_MLFLOW", "0")  # unit tests log nowhere unless they ask
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Small enough that a whole pipeline run takes a minute or two on 2 cores.
TINY_OVERRIDES = {
    "model": {"tokenizer_corpus": 300, "tokenizer_vocab_size": 600},
    "synthesize": {"num_problems": 100, "text_pool": 150, "asr_fraction": 0.1, "ray": {"shards": 2},
                   "sources": [{"kind": "builtin"},  # the default's shape: a small drill of the ear, responses unspoken
                               {"kind": "builtin", "kinds": ["short_digit"], "limit": 20, "speak_response": False}]},
    "codec": {"fit_clips": 20},
    "trainer": {"log_every": 1, "checkpoint_every": 4},
    "align": {"steps": 4, "batch_size": 4, "warmup_steps": 1},
    "pretrain": {"steps": 4, "batch_size": 4, "warmup_steps": 1},
    "text_tis": {"steps": 6, "batch_size": 4, "warmup_steps": 1, "probe_every": 3, "probe_problems": 3},
    "acoustic_tis": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "probe_every": 4, "probe_problems": 2},
    "talker": {"steps": 3, "batch_size": 2, "warmup_steps": 1},
    "evaluate": {"limit_per_split": 2, "audio_per_split": 1, "sweep_per_split": 1, "max_audio_seconds": 2.0,
                 "max_new_tokens": 96},
}


@pytest.fixture(scope="session")
def tokenizer():
    from models.tokenizer import train_bpe
    from tasks.synth.builtin import generate_problems

    probs = generate_problems(400, seed=123)
    return train_bpe((t for p in probs for t in (p.question, p.reasoning, p.response)), 800)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    from models.omni import TinyDims, build_tiny

    return build_tiny(TinyDims(), tokenizer)


def deep_update(d: dict, u: dict) -> dict:
    for k, v in u.items():
        d[k] = deep_update(dict(d.get(k, {})), v) if isinstance(v, dict) else v
    return d


def copy_repo(dst: Path) -> Path:
    """The repository's files (as git sees them, ignoring outputs) copied to ``dst`` as a new git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if not src.is_file():
            continue
        if f == "dvc.lock" or f.startswith(("data/", "checkpoints/", "metrics/", "reports/")) and not f.endswith(".gitignore"):
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / f)
    git = lambda *a: subprocess.run(["git", *a], cwd=dst, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("config", "user.email", "test@example.com")
    git("config", "user.name", "test")
    git("add", "-A")
    git("commit", "-qm", "copy")
    return dst


def write_params(repo: Path, overrides: dict) -> None:
    p = repo / "params.yaml"
    data = yaml.safe_load(p.read_text())
    p.write_text(yaml.safe_dump(deep_update(data, overrides), sort_keys=False))


def repo_env(repo: Path, **extra: str) -> dict[str, str]:
    from procs import DIST_VARS

    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}  # see procs.child_env
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(repo)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    repo = copy_repo(tmp_path / "repo")
    write_params(repo, TINY_OVERRIDES)
    subprocess.run(["git", "commit", "-qam", "tiny params"], cwd=repo, check=True)
    return repo


def synth_params(**kw):
    """The repository's ``synthesize`` params with ``kw`` merged over them (values: plain values,
    dicts for sections, SourceSpec objects or dicts for sources), validated like params.yaml."""
    import dataclasses

    from tasks.core.params import load_params

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {k: plain(x) for k, x in dataclasses.asdict(v).items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    kw.setdefault("text_pool", 0)  # the text-only pool is its own test (test_synth_stage)
    return load_params(overrides={"synthesize": {k: plain(v) for k, v in kw.items()}}).synthesize
