"""The code reads top-down and DVC knows what each stage runs.

- ``models/`` imports nothing from ``tasks/`` or ``flows/``; ``tasks/core/`` imports no stage module;
  ``tasks/`` imports nothing from ``flows/``; no import circle anywhere (function-level imports count).
- The service (``service.py`` and ``serve/``) imports ``models/``, ``serve/`` and the params loader
  (``tasks.core.params``) only: no stage module, nothing else of ``tasks/``, nothing of ``flows/``;
  and nothing outside it imports it.
- Every project file a DVC stage's command imports (transitively) is among that stage's ``deps``, so
  a change there makes DVC rerun the stage; every file the service imports is in the Bento
  (bentofile.yaml ``include``), in the package stage's fingerprint and in its deps.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "tasks", "flows", "serve", "service")  # service: the root module service.py
SERVICE_MAY_IMPORT = ("models.", "serve.", "serve", "tasks.core.params")


def module_file(mod: str) -> Path | None:
    base = ROOT / Path(*mod.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.exists():
            return f
    return None


def module_name(f: Path) -> str:
    rel = f.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@lru_cache(maxsize=None)
def imports(mod: str) -> frozenset[str]:
    """Project modules ``mod`` imports anywhere in its file (``from a import b`` resolves to a.b if b is a module)."""
    f = module_file(mod)
    if f is None:
        return frozenset()
    out: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n.split(".")[0] in PACKAGES and module_file(n) is not None and n != mod:
                out.add(n)
    # A submodule import implies its parent packages' __init__ (empty here, but still files).
    return frozenset(out)


def all_modules() -> list[str]:
    return sorted(module_name(f) for pkg in PACKAGES if (ROOT / pkg).is_dir() for f in (ROOT / pkg).rglob("*.py")) \
        + ["service"]


def in_service(mod: str) -> bool:
    return mod == "service" or mod == "serve" or mod.startswith("serve.")


def closure(mod: str) -> set[str]:
    seen, todo = set(), [mod]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(imports(m))
    return seen


def test_layers_read_top_down():
    bad = []
    for m in all_modules():
        for dep in imports(m):
            if m.startswith("models.") and dep.startswith(("tasks", "flows")):
                bad.append((m, dep))
            if m.startswith("tasks.") and dep.startswith("flows"):
                bad.append((m, dep))
            if m.startswith("tasks.core") and dep.startswith("tasks.") and not dep.startswith("tasks.core"):
                bad.append((m, dep))
            if in_service(m) and not (dep in ("tasks", "tasks.core") or dep.startswith(SERVICE_MAY_IMPORT)):
                bad.append((m, dep))
            if not in_service(m) and in_service(dep):
                bad.append((m, dep))
    assert not bad, f"imports against the layers: {bad}"


def _with_packages(mods: set[str]) -> set[str]:
    """The modules' files plus every package __init__.py above them (a Bento without one cannot import)."""
    files = set()
    for m in mods:
        files.add(module_file(m).relative_to(ROOT).as_posix())
        parts = m.split(".")
        for i in range(1, len(parts)):
            init = module_file(".".join(parts[:i]))
            if init is not None:
                files.add(init.relative_to(ROOT).as_posix())
    return files


def test_the_bento_and_the_package_stage_cover_what_the_service_imports():
    import fnmatch

    from tasks.package import SERVICE_FILES

    files = _with_packages(closure("service"))
    assert {"serve/routes.py", "serve/requests.py", "serve/scheduler.py", "models/manifest.py",
            "tasks/core/params.py"} <= files, sorted(files)
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    include = bentofile["include"]
    not_packed = sorted(f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in include))
    assert not not_packed, f"bentofile.yaml include lacks {not_packed}: the Bento could not import them"
    # An empty __init__.py changes nothing it could be fingerprinted or tracked for (as in the DVC check).
    code = {f for f in files if not f.endswith("__init__.py") or (ROOT / f).stat().st_size}
    unfingerprinted = sorted(f for f in code if not any(f == d or f.startswith(d + "/") for d in SERVICE_FILES))
    assert not unfingerprinted, f"tasks.package.SERVICE_FILES lacks {unfingerprinted}: a change would reuse a stale Bento"
    deps = [d if isinstance(d, str) else next(iter(d)) for d in _stages()["package"]["deps"]]
    untracked = sorted(f for f in code if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
    assert not untracked, f"dvc.yaml stage package does not list {untracked} in deps"


def test_no_import_circle():
    graph = {m: {d for d in imports(m) if d in set(all_modules())} for m in all_modules()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                cycle.extend(path[path.index(d):] + [m, d] if d in path else [m, d])
                return True
            if state.get(d) is None and visit(d, path + [m]):
                return True
        state[m] = 2
        return False

    for m in graph:
        if state.get(m) is None and visit(m, []):
            break
    assert not cycle, f"import circle: {' -> '.join(cycle)}"


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(_stages()))
def test_dvc_deps_cover_what_the_stage_imports(name):
    st = _stages()[name]
    cmd = st["cmd"]
    assert cmd.startswith("python -m "), f"{name}: command {cmd!r} is not `python -m <module>`"
    mod = cmd.split()[2]
    files = {module_file(m).relative_to(ROOT).as_posix() for m in closure(mod)}
    files = {f for f in files if not f.endswith("__init__.py") or (ROOT / f).stat().st_size}
    deps = [d if isinstance(d, str) else next(iter(d)) for d in st.get("deps", [])]

    def covered(f: str) -> bool:
        return any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)

    missing = sorted(f for f in files if not covered(f))
    assert not missing, f"dvc.yaml stage {name} imports {missing} but does not list them in deps"


def test_dvc_params_match_each_stage_module():
    """Each stage module's PARAMS is exactly what its dvc.yaml stage lists (one name per stage everywhere)."""
    import importlib

    for name, st in _stages().items():
        mod = importlib.import_module(st["cmd"].split()[2])
        assert mod.STAGE == name.split("@")[0], name
        assert sorted(mod.PARAMS) == sorted(st.get("params", [])), name
