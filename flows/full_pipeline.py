"""The `full-pipeline` Prefect flow: every DVC stage in order, skipped when DVC says it is unchanged.

The order and names come from the pipeline's one list (``tasks.core.stages.PIPELINE``, matrix stages
expanded per ``formats``); the flow checks that dvc.yaml lists the same stages before it runs any.

Prefect owns sequencing, logs and the deployment; DVC owns what is stale; MLflow gets one parent run
per pipeline run, which the stages (DVC subprocesses) join as child runs through
``OMNI_TIS_PARENT_RUN_ID``. No ML logic lives here.

    python -m flows.full_pipeline          # run once, in-process (the local Prefect API or a server)
    python -m flows.serve                  # serve the `full-pipeline/local` deployment
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.atomic import write_json
from tasks.core.cpu import ENV as CPU_ENV
from tasks.core.cpu import machine_cores, write_share
from tasks.core.params import ROOT
from tasks.core.stages import may_share, pipeline_runs
from tasks.core.tracking import PARENT_ENV


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # DVC runs stage commands through a shell: make `python` and `dvc` this environment's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


DVC = ("--wait-for-lock",)  # stages run side by side: a dvc command waits for another's repo lock instead of failing


def dvc(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *DVC, *args], cwd=ROOT, env=_env(env),
                          capture_output=True, text=True, check=check)


def stage_graph(names: Sequence[str]) -> dict[str, set[str]]:
    """Each stage's upstream stages among ``names``, as DVC's own graph has them (``dvc dag --dot``): what a
    stage must wait for. Stages outside ``names`` (a partial run) count as done."""
    ups: dict[str, set[str]] = {n: set() for n in names}
    for a, b in re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dvc("dag", "--dot").stdout):
        if a in ups and b in ups:
            ups[b].add(a)
    return ups


def dvc_stage_names() -> list[str]:
    """Stages in dvc.yaml order (matrix stages expanded, e.g. ``text_tis@tis``), as DVC reads them."""
    out = dvc("stage", "list", "--name-only").stdout.split()
    if not out:
        raise RuntimeError(f"dvc.yaml in {ROOT} lists no stages")
    return out


def stage_names(formats: Sequence[str]) -> list[str]:
    """The flow's stages: ``tasks.core.stages.PIPELINE`` expanded per format, once dvc.yaml is seen to
    list exactly these, in this order (else a stage added to one and not the other would be skipped)."""
    names = pipeline_runs(formats)
    in_dvc = dvc_stage_names()
    if in_dvc != names:
        raise RuntimeError(f"dvc.yaml and tasks/core/stages.py PIPELINE disagree: dvc.yaml has {in_dvc}, the "
                           f"pipeline list gives {names}; add or reorder the stage in both")
    return names


def is_stale(stage: str) -> bool:
    res = dvc("status", stage, "--json")
    return bool(json.loads(res.stdout or "{}"))


@task(name="stage", cache_policy=NO_CACHE, log_prints=True)
def run_stage(stage: str, parent_run_id: str | None, cpu_share: str | None = None) -> dict:
    """`dvc repro --single-item STAGE` if DVC says it is stale; streams the stage's log lines. ``cpu_share``: the
    file through which the flow lends the stage its cores (tasks/core/cpu.py)."""
    logger = get_run_logger()
    if not is_stale(stage):
        logger.info("%s: unchanged, skipped (DVC)", stage)
        return {"stage": stage, "status": "skipped", "seconds": 0.0}
    t0 = time.time()
    logger.info("%s: running", stage)
    extra = {PARENT_ENV: parent_run_id} if parent_run_id else {}
    if cpu_share:
        extra[CPU_ENV] = cpu_share
    env = _env(extra)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), *DVC, "repro", "--single-item", stage],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            logger.info("%s | %s", stage, line)
            tail = (tail + [line])[-30:]
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"stage {stage} failed (exit {rc}); last lines:\n" + "\n".join(tail))
    return {"stage": stage, "status": "ran", "seconds": round(time.time() - t0, 1)}


@task(name="push", cache_policy=NO_CACHE)
def push(remote_url: str, remote: str) -> str:
    """Push datasets and checkpoints to the DVC remote (params.yaml `dvc.remote_url`)."""
    logger = get_run_logger()
    current = dvc("remote", "list", check=False).stdout
    if f"{remote}\t{remote_url}" not in current.replace("  ", "\t"):
        # A per-clone override (.dvc/config.local, git-ignored) so params.yaml decides the remote.
        dvc("remote", "add", "--local", "-f", "-d", remote, remote_url)
    res = dvc("push", "-r", remote, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"dvc push to {remote_url} failed:\n{res.stdout}\n{res.stderr}")
    logger.info("pushed to %s: %s", remote_url, (res.stdout.strip().splitlines() or ["nothing"])[-1])
    return remote_url


def _start_parent_run(experiment: str, name: str):
    import mlflow

    from tasks.core.tracking import use_experiment

    use_experiment(experiment)
    return mlflow.start_run(run_name=name, tags={"pipeline": "full-pipeline"})


@flow(name="full-pipeline", log_prints=True)
def full_pipeline(stages: list[str] | None = None, push_remote: bool = True) -> list[dict]:
    """Run the DVC stages in order (all of dvc.yaml by default), then push to the DVC remote."""
    import mlflow
    from prefect.runtime import flow_run

    from tasks.core.params import flat, load_params, to_dict

    logger = get_run_logger()
    p = load_params()
    names = stage_names(p.formats)
    if stages:
        unknown = [s for s in stages if s not in names]
        if unknown:
            raise ValueError(f"unknown stages {unknown}; dvc.yaml has {names}")
        names = [s for s in names if s in stages]
    t0 = time.time()
    run = _start_parent_run(p.mlflow.experiment, f"pipeline-{flow_run.get_name() or 'local'}")
    results: list[dict] = []
    try:
        params = flat(to_dict(p))
        keys = list(params)
        for i in range(0, len(keys), 90):
            mlflow.log_params({k: str(params[k])[:500] for k in keys[i:i + 90]})
        run_stages(names, stage_graph(names), run.info.run_id, p.flow.parallel, results)
        if push_remote:
            push(os.path.expanduser(p.dvc.remote_url), p.dvc.remote)
        status = "FINISHED"
    except BaseException:
        status = "FAILED"
        raise
    finally:
        ran = [r["stage"] for r in results if r["status"] == "ran"]
        mlflow.set_tags({"stages_ran": ",".join(ran) or "-", "prefect_flow_run": str(flow_run.get_id())})
        mlflow.log_metrics({"pipeline/seconds": time.time() - t0, "pipeline/stages_ran": len(ran)})
        mlflow.log_dict({"stages": results}, "pipeline_results.json")
        for m in sorted((ROOT / "metrics").glob("*.json")):
            mlflow.log_artifact(str(m), "metrics")
        mlflow.end_run(status)
    for r in results:
        logger.info("%-24s %-8s %6.1fs", r["stage"], r["status"], r["seconds"])
    publish_report()
    _write_results(results, time.time() - t0)
    return results


SHARES = ROOT / ".run" / "cpu"  # one file per running stage: the cores it is lent (tasks/core/cpu.py)


def run_stages(names: Sequence[str], ups: dict[str, set[str]], parent_run_id: str | None, parallel: int,
               results: list[dict] | None = None, cores: int | None = None, poll: float = 0.5) -> list[dict]:
    """Run ``names`` as soon as their upstream stages (``ups``) are done, in list order among those ready.

    At most ``parallel`` at once, and only stages that may share the machine (``may_share``: the codec, the
    training stages; the two formats' evaluations with each other) run side by side; each running stage is lent
    ``cores // running`` of ``machine_cores()``, rewritten whenever one starts or ends, so a training stage left
    alone gets them all back (an evaluation keeps the share it started with). A failed stage stops new
    launches; the running ones finish (their checkpoints stay valid), then the failure is raised. The finished
    stages' results go to ``results`` (returned), in list order, also when one failed."""
    logger = get_run_logger()
    cores = cores or machine_cores()
    done: dict[str, dict] = {}
    running: dict = {}  # stage -> future
    failed: list[tuple[str, BaseException]] = []

    def lend() -> None:
        for name in running:
            write_share(SHARES / name, max(1, cores // len(running)))

    def may_start(name: str) -> bool:
        if not ups[name] <= done.keys():
            return False
        if not running:
            return True
        return len(running) < parallel and all(may_share(name, r) for r in running)

    pending = list(names)
    while pending or running:
        starting = []
        for name in [n for n in pending if not failed]:
            if may_start(name):
                pending.remove(name)
                running[name] = None
                starting.append(name)
        if starting:
            lend()  # before they start: each reads its share first thing
            for name in starting:
                running[name] = run_stage.with_options(name=name).submit(name, parent_run_id, str(SHARES / name))
            if len(running) > 1:
                logger.info("running side by side: %s, %d core(s) each", ", ".join(running),
                            max(1, cores // len(running)))
        if failed and not running:
            break
        if not running and pending:  # nothing can start: an upstream stage is missing from the graph
            raise RuntimeError(f"stages {pending} wait for stages that never ran: {[sorted(ups[n]) for n in pending]}")
        time.sleep(poll)
        for name, fut in list(running.items()):
            if fut.state.is_final():
                del running[name]
                (SHARES / name).unlink(missing_ok=True)
                try:
                    done[name] = fut.result()
                except BaseException as e:  # noqa: BLE001 -- raised below, once the others finished
                    failed.append((name, e))
                    logger.error("%s failed; stages already running finish, no new one starts", name)
                lend()
    results = results if results is not None else []
    results.extend(done[n] for n in names if n in done)
    if failed:
        raise failed[0][1]
    return results


REPORT_TABLE = ROOT / "reports" / "compare" / "table.json"  # written by the compare stage


@task(name="report", cache_policy=NO_CACHE)
def publish_report(path: Path = REPORT_TABLE) -> str | None:
    """Show the evaluation's TiS vs think-first table on the flow run (a Prefect table artifact)."""
    from prefect.artifacts import create_table_artifact

    if not path.exists():
        get_run_logger().info("no %s yet (the compare stage writes it); no table artifact", path.relative_to(ROOT))
        return None
    table = json.loads(path.read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["rows"]]
    return str(create_table_artifact(key="tis-vs-think-first", table=rows,
                                     description="Spoken-MQA (or its offline proxy): TiS against the think-first "
                                                 "baseline, per split (reports/compare/table.md)"))


def _write_results(results: list[dict], seconds: float) -> None:
    """.run/last_pipeline.json, read by `make pipeline` to print the stage table."""
    write_json(ROOT / ".run" / "last_pipeline.json", {"stages": results, "seconds": round(seconds, 1)})


if __name__ == "__main__":
    full_pipeline()
