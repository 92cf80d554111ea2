"""dvc.yaml lists every module of ours a stage runs, or a change to it would not rerun the stage.

A missed dep is silent: `dvc repro` says "up to date" and the outputs were made by code that no
longer exists. The imports are read from the source (top-level and inside functions alike), so
a new import of one of our modules fails here until dvc.yaml lists it.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def module_file(module: str) -> Path | None:
    """The file of one of our modules (`classifier.x.y`), or None for anything else."""
    if module != "classifier" and not module.startswith("classifier."):
        return None
    base = SRC / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from classifier.pipeline import prepare` names a module too
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def code_closure(module: str) -> set[Path]:
    """Our source files `module` runs: itself and what it imports, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
    return {p for p in seen if p.name != "__init__.py" or has_code(p)}


def has_code(path: Path) -> bool:
    """False for a package marker that holds at most a docstring (ours do)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def test_the_import_reader_sees_lazy_imports() -> None:
    # evaluate imports load_split inside a function: the reader must not miss it
    closure = code_closure("classifier.pipeline.evaluate")
    assert SRC / "classifier/pipeline/prepare.py" in closure
    assert SRC / "classifier/pipeline/common.py" in closure


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_all_the_code_it_runs(stage: str) -> None:
    cmd = STAGES[stage]["cmd"].split()
    assert cmd[:2] == ["python", "-m"], f"stage {stage}: expected `python -m MODULE`, got {cmd}"
    needed = {p.relative_to(REPO).as_posix() for p in code_closure(cmd[2])}
    assert needed, f"stage {stage}: {cmd[2]} is not a module under src/"
    missing = sorted(needed - set(STAGES[stage]["deps"]))
    assert not missing, f"dvc.yaml stage {stage!r} runs {missing} but does not list them in deps"


LOCK = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
RELOCK = (
    "dvc.lock must describe the committed code and params, or a fresh `make run` trains again "
    "and the committed model is not what its commit makes: run `dvc repro` and commit dvc.lock "
    "(or, for a change that cannot alter an output, such as a comment, `dvc pull` then "
    "`dvc commit STAGE`)"
)


def dvc_md5(path: Path) -> str:
    """DVC 3's file hash (`hash: md5` in dvc.lock): the MD5 of the bytes, not for security."""
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def lookup(dotted: str) -> object:
    """params.yaml's value at a dotted key, or a marker when it has none."""
    node: object = PARAMS
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return "<not in params.yaml>"
        node = node[key]
    return node


@pytest.mark.parametrize("stage", sorted(LOCK))
def test_dvc_lock_records_the_committed_code_of_each_stage(stage: str) -> None:
    stale = [
        dep["path"]
        for dep in LOCK[stage].get("deps", [])
        if (REPO / dep["path"]).is_file()
        and dep["path"].endswith(".py")
        and dvc_md5(REPO / dep["path"]) != dep["md5"]
    ]
    assert not stale, f"stage {stage}: {stale} changed since dvc.lock. {RELOCK}"


@pytest.mark.parametrize("stage", sorted(LOCK))
def test_dvc_lock_records_the_committed_params_of_each_stage(stage: str) -> None:
    locked = LOCK[stage].get("params", {}).get("params.yaml", {})
    stale = {key: (value, lookup(key)) for key, value in locked.items() if lookup(key) != value}
    assert not stale, f"stage {stage}: params (locked, now) {stale}. {RELOCK}"
