"""MLflow: one child run per stage under the pipeline's parent run, logged from rank 0 only.

The flow starts the parent run and passes its id to the stages (run by DVC as subprocesses) in
``OMNI_TIS_PARENT_RUN_ID``. A stage run by hand (``python -m tasks.text_tis``) gets a top-level run.
The tracking URI is ``MLFLOW_TRACKING_URI`` (the flow points it at the local server) or, by
default, the SQLite store ``sqlite:///mlflow.db`` in the repository root.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from tasks.core.params import ROOT, flat

PARENT_ENV = "OMNI_TIS_PARENT_RUN_ID"
log = logging.getLogger(__name__)


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``; else the local server `make pipeline` started, if it is up; else SQLite.

    Preferring the running server matters: runs it created keep their artifacts behind it
    (``mlflow-artifacts:/``), which a plain SQLite client cannot write to.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    local = f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT', '5000')}"
    try:
        import urllib.request

        with urllib.request.urlopen(f"{local}/health", timeout=1) as r:
            if r.status == 200:
                return local
    except Exception:
        pass
    return f"sqlite:///{ROOT / 'mlflow.db'}"


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _quiet() -> None:
    for name in ("alembic", "mlflow.store", "mlflow.tracking", "mlflow.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Tracker:
    """Thin wrapper so stage code logs the same way with or without an active run."""

    def __init__(self, run: Any | None):
        self.run = run

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run else None

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        if self.run:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)

    def params(self, values: dict[str, Any]) -> None:
        if self.run:
            import mlflow

            items = flat(values)
            keys = list(items)
            for i in range(0, len(keys), 90):  # MLflow caps a batch at 100 params
                mlflow.log_params({k: str(items[k])[:500] for k in keys[i : i + 90]})

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or directory; a store that cannot take artifacts costs a warning, not the stage."""
        if self.run and Path(path).exists():
            import mlflow

            try:
                if Path(path).is_dir():
                    mlflow.log_artifacts(str(path), artifact_path)
                else:
                    mlflow.log_artifact(str(path), artifact_path)
            except Exception as e:  # noqa: BLE001 - the numbers are logged; the file is still on disk
                log.warning("could not log artifact %s to MLflow (%s); start the MLflow server "
                            "(`make pipeline` does) or set MLFLOW_TRACKING_URI", path, e)

    def table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Log ``rows`` (one dict per row, same keys) as an MLflow table at ``tables/<artifact_file>`` (ends
        in .json); it shows in the run's Artifacts and in the evaluation view. Under ``tables/``: a table
        named like the stage's metrics file at the artifact root (``compare.json``) would otherwise be
        appended to that file, which MLflow refuses."""
        if self.run and rows:
            import mlflow

            cols = list(dict.fromkeys(k for r in rows for k in r))
            data = {c: [r.get(c) if isinstance(r.get(c), (int, float, str, bool)) or r.get(c) is None
                        else str(r.get(c)) for r in rows] for c in cols}
            try:
                mlflow.log_table(data=data, artifact_file=f"tables/{artifact_file}")
            except Exception as e:  # noqa: BLE001 - the table is a view; the data is on disk
                log.warning("could not log table %s to MLflow (%s)", artifact_file, e)

    def dataset(self, path: str, digest: str | None, context: str) -> None:
        """Log a dataset or checkpoint directory as a run input (name = its path, digest = DVC's hash)."""
        if self.run:
            import mlflow
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset

            try:
                ds = MetaDataset(resolve_dataset_source(str(ROOT / path)), name=path,
                                 digest=(digest or "unversioned").removesuffix(".dir")[:36])
                mlflow.log_input(ds, context=context)
            except Exception as e:  # noqa: BLE001 - lineage is a view; the stage's work is done
                log.warning("could not log input %s to MLflow (%s)", path, e)

    def tags(self, values: dict[str, str]) -> None:
        if self.run:
            import mlflow

            mlflow.set_tags(values)


EXPERIMENT_KIND = "custom_model_development"  # MLflow 3 opens such experiments on the model-training view


def use_experiment(name: str) -> str:
    """Point MLflow at the tracking store and ``name`` (created as a model-training experiment, not
    MLflow 3's default GenAI overview); returns its id."""
    import mlflow

    _quiet()
    mlflow.set_tracking_uri(tracking_uri())
    exp = mlflow.set_experiment(name)
    if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
    return exp.experiment_id


DATA_ROOTS = ("data/", "checkpoints/", "reports/")


def dvc_inputs(stage: str, fmt: str | None = None, root: Path = ROOT) -> list[tuple[str, str | None]]:
    """The data and checkpoint deps of a dvc.yaml stage, each with DVC's hash from dvc.lock (None where
    DVC has not recorded it, e.g. a stage run by hand before any ``dvc repro``)."""
    import yaml

    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.exists():
        return []
    st = (yaml.safe_load(dvc_yaml.read_text()).get("stages") or {}).get(stage) or {}
    deps = [d if isinstance(d, str) else next(iter(d)) for d in st.get("deps", [])]
    deps = [d.replace("${item.format}", fmt or "") for d in deps if d.startswith(DATA_ROOTS)]
    hashes: dict[str, str] = {}
    for entry in (_lock_stages(root / "dvc.lock") or {}).values():
        if not isinstance(entry, dict):
            continue
        for item in (entry.get("outs") or []) + (entry.get("deps") or []):
            if isinstance(item, dict) and item.get("md5"):
                hashes.setdefault(item["path"], item["md5"])
    return [(d, hashes.get(d)) for d in deps]


def _lock_stages(lock: Path, tries: int = 5, wait_s: float = 0.2) -> dict | None:
    """dvc.lock's ``stages``. With ``flow.parallel`` another stage's ``dvc repro`` may be rewriting the file
    while this one starts (it is read empty or cut short): read it again a few times, then go on without
    hashes (they only label the MLflow inputs) rather than fail the stage."""
    import time

    import yaml

    for attempt in range(tries):
        if not lock.exists():
            return None
        try:
            doc = yaml.safe_load(lock.read_text())
        except (OSError, yaml.YAMLError):
            doc = None
        if isinstance(doc, dict):
            stages = doc.get("stages")
            return stages if isinstance(stages, dict) else {}
        if attempt + 1 < tries:
            time.sleep(wait_s)
    log.warning("%s could not be read (being rewritten by another stage?); the MLflow inputs go without DVC hashes", lock)
    return None


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, params: dict[str, Any] | None = None,
              inputs: list[tuple[str, str | None]] | None = None, context: str = "training") -> Iterator[Tracker]:
    """A child MLflow run named after the stage (no run on ranks other than 0). ``inputs``: the
    datasets/checkpoints it reads, as (path, DVC hash), logged as the run's dataset inputs."""
    if not is_rank0() or os.environ.get("OMNI_TIS_MLFLOW", "1") == "0":
        yield Tracker(None)
        return
    import mlflow

    use_experiment(experiment)
    parent = os.environ.get(PARENT_ENV) or None
    with mlflow.start_run(run_name=stage, tags={"stage": stage}, parent_run_id=parent) as run:
        tracker = Tracker(run)
        if params:
            tracker.params(params)
        for path, digest in inputs or []:
            tracker.dataset(path, digest, context)
        try:
            yield tracker
        except BaseException:
            mlflow.set_tag("status", "failed")
            raise
