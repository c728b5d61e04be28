"""Stage `package` (last): the trained TiS model into the BentoML model store, then a Bento serving it.

1. One directory the service loads (``service.py``, ``serve.runtime.Runtime``), laid out straight into the store
   (``assemble`` lays it out anywhere, for tests and ``OMNI_TIS_MODEL_DIR``)::

       model/ tokenizer/   the latest talker@tis checkpoint (full Qwen2.5-Omni: thinker + trained talker)
       codec/              the codec stage's codec (codec.json + weights; not its training codes)
       params.yaml         the params the pipeline ran with
       metrics.json        evaluate@tis's metrics (reports/evaluate/tis/metrics.json)
       omni_tis.json       manifest (models.manifest.Manifest, which the service reads): format,
                           schedule, source checkpoint, git revision, dvc.lock hash, the fingerprint
                           of all of the above

2. ``bentoml.models.create(package.model_name)``, labelled with the fingerprint; a model with the
   same fingerprint is reused instead (DVC skips the stage anyway when
   nothing changed; this keeps `dvc repro -f` from piling up copies of a multi-GB model).
3. ``bentoml build`` of bentofile.yaml with ``--arg model=<name>:<version>``, so the Bento serves
   exactly that model; a Bento with the same fingerprint (model + service code) is reused.
4. ``reports/package.json`` (DVC output): model tag, Bento tag, fingerprints, the serve command.

    python -m tasks.package            # BENTOML_HOME picks the store (default ~/bentoml)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from models.manifest import Manifest, Schedule
from tasks.core.params import ROOT, Params
from tasks.core.stage import StageResult, stage_main

STAGE = "package"
PARAMS = ["package", "serve", "schedule"]
FORMAT = "tis"  # the product: thinking-in-speaking (think_first is the baseline it is compared with)
TALKER = ROOT / "checkpoints" / "talker" / FORMAT
CODEC = ROOT / "checkpoints" / "codec"
METRICS = ROOT / "reports" / "evaluate" / FORMAT / "metrics.json"
REPORT = ROOT / "reports" / "package.json"
# What the Bento runs: its fingerprint covers these (bentofile.yaml's include list, same order;
# tests/test_layers.py checks both cover every file the service imports).
SERVICE_FILES = ("service.py", "bentofile.yaml", "params.yaml", "web", "serve", "models", "tasks/core/params.py")
CODEC_SKIP = {"codes.parquet"}  # the codec stage's encoded training targets: not needed to speak


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def fingerprint(paths: list[Path], root: Path) -> str:
    """sha256 over the relative names and bytes of every file under ``paths`` (sorted)."""
    h = hashlib.sha256()
    for base in paths:
        for f in _files(base):
            h.update(str(f.relative_to(root)).encode() + b"\0")
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            h.update(b"\0")
    return h.hexdigest()


def git_revision(root: Path = ROOT) -> dict:
    """HEAD and whether the working tree differs from it ("unknown" outside a git checkout)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def dvc_revision(root: Path = ROOT) -> dict:
    """The sha256 of dvc.lock and the hashes DVC recorded for the packaged inputs (None before a DVC run)."""
    import yaml

    lock = root / "dvc.lock"
    if not lock.exists():
        return {"lock_sha256": None, "outs": {}}
    data = yaml.safe_load(lock.read_text()) or {}
    wanted = {f"checkpoints/talker/{FORMAT}", "checkpoints/codec", f"reports/evaluate/{FORMAT}/metrics.json"}
    outs = {o["path"]: o.get("md5") for st in (data.get("stages") or {}).values() for o in st.get("outs", [])
            if o.get("path") in wanted}
    return {"lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest(), "outs": outs}


def manifest_for(checkpoint: Path, codec_dir: Path | None, metrics: dict, params_file: Path, schedule: dict,
                 provenance: dict | None = None) -> Manifest:
    """What ``omni_tis.json`` says, with the fingerprint of every input (checked here: names the missing part)."""
    checkpoint = Path(checkpoint)
    for sub in ("model", "tokenizer"):
        if not (checkpoint / sub).is_dir():
            raise FileNotFoundError(f"{checkpoint} has no {sub}/; pass a training stage's step directory "
                                    f"(e.g. checkpoints/talker/{FORMAT}/step-00000060)")
    if codec_dir is not None and not (Path(codec_dir) / "codec.json").exists():
        raise FileNotFoundError(f"{codec_dir} holds no codec.json; run the codec stage (`python -m tasks.codec`)")
    inputs = [checkpoint / "model", checkpoint / "tokenizer"] + ([Path(codec_dir)] if codec_dir else [])
    fp = hashlib.sha256()
    for path in inputs:
        fp.update(fingerprint([path], path.parent).encode())
    fp.update(json.dumps(metrics, sort_keys=True).encode())
    fp.update(Path(params_file).read_bytes())
    provenance = provenance or {}
    return Manifest(format=FORMAT, schedule=Schedule(int(schedule["speak"]), int(schedule["think"])),
                    checkpoint=str(checkpoint), codec=bool(codec_dir), fingerprint=fp.hexdigest(),
                    git=provenance.get("git"), dvc=provenance.get("dvc"))


def lay_out(dst: Path, manifest: Manifest, codec_dir: Path | None, metrics: dict, params_file: Path) -> None:
    """Copy the inputs ``manifest`` names into the existing, empty directory ``dst``."""
    checkpoint = Path(manifest.checkpoint)
    shutil.copytree(checkpoint / "model", dst / "model")
    shutil.copytree(checkpoint / "tokenizer", dst / "tokenizer")
    if codec_dir is not None:
        shutil.copytree(codec_dir, dst / "codec", ignore=lambda _d, names: [n for n in names if n in CODEC_SKIP])
    shutil.copy2(params_file, dst / "params.yaml")
    (dst / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    manifest.write(dst)


def assemble(out_dir: Path, checkpoint: Path, codec_dir: Path | None, metrics: dict, params_file: Path,
             schedule: dict, provenance: dict | None = None) -> Manifest:
    """The directory the service loads, at ``out_dir`` (atomically; tests and `OMNI_TIS_MODEL_DIR`
    use this without a model store); returns the manifest."""
    from models.atomic import atomic_dir

    manifest = manifest_for(checkpoint, codec_dir, metrics, params_file, schedule, provenance)
    with atomic_dir(out_dir) as tmp:
        lay_out(tmp, manifest, codec_dir, metrics, params_file)
    return manifest


def _flat_numbers(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_numbers(v, key + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def _no_none(d: dict) -> dict:
    """BentoML metadata holds no None: leave such entries out."""
    return {k: _no_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def _listed(lister, name: str) -> list:
    """A store's entries named ``name`` (BentoML raises NotFound for none)."""
    from bentoml.exceptions import NotFound

    try:
        return list(lister(name))
    except NotFound:
        return []


def store_model(name: str, manifest: Manifest, codec_dir: Path | None, metrics: dict, params_file: Path) -> tuple[str, bool]:
    """Lay the model out straight into the store as ``name`` (BentoML removes a half-written one),
    unless a model with the same fingerprint is there; returns (tag, created)."""
    import bentoml

    label = manifest.fingerprint[:32]  # label values are at most 63 characters
    for m in sorted(_listed(bentoml.models.list, name), key=lambda m: m.info.creation_time, reverse=True):
        if m.info.labels.get("fingerprint") == label:
            return str(m.tag), False
    labels = {"fingerprint": label, "format": manifest.format,
              "git_commit": str((manifest.git or {}).get("commit", "unknown"))[:40]}
    metadata = _no_none({"schedule": manifest.to_dict()["schedule"], "git": manifest.git, "dvc": manifest.dvc,
                         "checkpoint": manifest.checkpoint, "metrics": _flat_numbers(metrics)})
    with bentoml.models.create(name, labels=labels, metadata=metadata) as ref:
        lay_out(Path(ref.path), manifest, codec_dir, metrics, params_file)
    return str(ref.tag), True


def build_bento(model_tag: str, bento_name: str, service_fp: str, root: Path = ROOT) -> tuple[str, bool]:
    """``bentoml build`` of ``root/bentofile.yaml`` pinned to ``model_tag`` (a subprocess, so the
    service module is imported fresh with the build arguments); reuses a Bento with the same
    fingerprint. Returns (tag, built)."""
    import bentoml

    label = hashlib.sha256(f"{model_tag}\0{service_fp}".encode()).hexdigest()[:32]
    for b in sorted(_listed(bentoml.bentos.list, bento_name), key=lambda b: b.info.creation_time, reverse=True):
        if b.info.labels.get("fingerprint") == label:
            return str(b.tag), False
    cmd = [sys.executable, "-m", "bentoml", "build", str(root), "-f", str(root / "bentofile.yaml"),
           "--name", bento_name, "--label", f"fingerprint={label}", "--label", f"model={model_tag.replace(':', '_')}",
           "--arg", f"model={model_tag}", "--output", "tag", "--do-not-track"]
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("OMNI_TIS_MODEL_DIR", None)
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"bentoml build failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    tag = next((line.split("__tag__:", 1)[1].strip() for line in r.stdout.splitlines() if "__tag__:" in line), None)
    if tag is None:
        raise RuntimeError(f"bentoml build printed no tag:\n{r.stdout[-2000:]}")
    return tag, True


def run(p: Params, checkpoint_dir: Path = TALKER, codec_dir: Path = CODEC, metrics_file: Path = METRICS,
        report: Path = REPORT, root: Path = ROOT) -> dict:
    """Assemble, store and build; writes ``report``; returns it."""
    from models.atomic import write_json
    from tasks.core.checkpoint import latest

    t0 = time.time()
    if not Path(metrics_file).exists():
        raise FileNotFoundError(f"{metrics_file} not found; run the evaluate stage first (`dvc repro evaluate@{FORMAT}`)")
    metrics = json.loads(Path(metrics_file).read_text())
    ckpt = latest(checkpoint_dir)  # raises FileNotFoundError naming the stage to run
    provenance = {"git": git_revision(root), "dvc": dvc_revision(root)}
    manifest = manifest_for(ckpt, codec_dir, metrics, root / "params.yaml",
                            {"speak": p.schedule.speak, "think": p.schedule.think}, provenance)
    model_tag, created = store_model(p.package.model_name, manifest, codec_dir, metrics, root / "params.yaml")
    service_fp = fingerprint([root / f for f in SERVICE_FILES if (root / f).exists()], root)
    bento_tag, built = build_bento(model_tag, p.package.bento_name, service_fp, root)
    out = {
        "model_tag": model_tag,
        "bento_tag": bento_tag,
        "model_created": created,
        "bento_built": built,
        "fingerprint": manifest.fingerprint,
        "service_fingerprint": service_fp,
        "checkpoint": str(Path(ckpt).relative_to(root)) if Path(ckpt).is_relative_to(root) else str(ckpt),
        "git": provenance["git"],
        "dvc_lock_sha256": provenance["dvc"]["lock_sha256"],
        "serve": f"bentoml serve {bento_tag}",
        "seconds": round(time.time() - t0, 2),
    }
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    write_json(report, out)
    return out


def work(p: Params, fmt: str | None = None, tracker=None) -> StageResult:
    r = run(p)
    return StageResult(
        {"package/model_created": int(r["model_created"]), "package/bento_built": int(r["bento_built"]),
         "package/seconds": r["seconds"]},
        f"model {r['model_tag']} ({'new' if r['model_created'] else 'unchanged'}), "
        f"Bento {r['bento_tag']} ({'built' if r['bento_built'] else 'unchanged'}); serve: {r['serve']}",
        artifacts=[(REPORT, None)],
        tags={"bentoml.model": r["model_tag"], "bentoml.bento": r["bento_tag"]},
    )


def main(argv: list[str] | None = None) -> None:
    stage_main(STAGE, PARAMS, work, argv, description="Put the trained TiS model into the BentoML model store and "
               "build a Bento serving it (BENTOML_HOME picks the store); writes reports/package.json.")


if __name__ == "__main__":
    main()
