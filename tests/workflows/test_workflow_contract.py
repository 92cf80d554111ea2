"""The contract every workflow in .github/workflows keeps (docs/delivery.md, "Workflow rules"):

- every `run:` line is `make <existing target> [VAR=value]` or a `gitops` command line that the
  real argument parser accepts; no `${{ }}` inside `run:` (values come in through `env:`);
- every `uses:` is a local workflow or pinned to a 40-hex commit SHA with a `# vX.Y.Z` comment;
- read-only or empty top-level permissions, explicit per-job permissions, a timeout on every job,
  `persist-credentials: false` except in jobs that push, a concurrency group on jobs that push;
- train-deploy's path filter can never match a deploy commit (overlays/ only), so no loops.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
USES_LINE = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<comment>.*))?$")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^v\d+\.\d+\.\d+$")
ENV_REF = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)")
# Set by the runner itself, so a step may use them without declaring them.
RUNNER_ENV = {"GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_SHA", "HOME", "PATH"}


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    # PyYAML reads the bare key `on` as the boolean True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _jobs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return doc["jobs"]


def _run_lines(script: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", script)
    return [
        ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]


@pytest.fixture(scope="module")
def make_targets() -> set[str]:
    """Every target make knows, from its database (`make -pRrq`): the real include set."""
    proc = subprocess.run(
        ["make", "-pRrq", "-C", str(ROOT)], capture_output=True, text=True, check=False
    )
    targets, skip_next = set(), False
    for line in proc.stdout.splitlines():
        if line.startswith("# Not a target"):
            skip_next = True
            continue
        match = re.match(r"^([A-Za-z0-9_.-]+):(?!=)", line)
        if match and not skip_next:
            targets.add(match.group(1))
        skip_next = False
    assert "setup" in targets, "could not read make's database"
    return targets


def test_workflows_exist() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "train-deploy.yml", "promote.yml", "rollback.yml"} <= names


def run_step_problems(name: str, doc: dict[str, Any], make_targets: set[str]) -> list[str]:
    """What is wrong with the `run:` steps of one workflow (empty: nothing)."""
    parser = build_parser()
    problems = []
    for job_name, job in _jobs(doc).items():
        for step in job.get("steps", []):
            if "run" not in step:
                continue
            where = f"{name}:{job_name}: {step['run']!r}"
            if "${{" in step["run"]:
                problems.append(f"{where}: expression inside run: (pass it through env:)")
            declared = set(doc.get("env", {})) | set(job.get("env", {})) | set(step.get("env", {}))
            for line in _run_lines(step["run"]):
                argv = shlex.split(line)
                undeclared = set(ENV_REF.findall(line)) - declared - RUNNER_ENV
                if undeclared:
                    problems.append(f"{where}: undeclared env {sorted(undeclared)}")
                if argv[0] == "make":
                    goals = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
                    missing = [g for g in goals if g not in make_targets]
                    if not goals or missing:
                        problems.append(f"{where}: no make target {missing or '(none given)'}")
                elif argv[0] == "gitops":
                    try:
                        parser.parse_args(argv[1:])
                    except SystemExit:
                        problems.append(f"{where}: gitops rejects these arguments")
                else:
                    problems.append(f"{where}: calls {argv[0]!r}, not make or gitops")
    return problems


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_run_steps_call_make_targets_or_gitops(path: Path, make_targets: set[str]) -> None:
    assert run_step_problems(path.name, _load(path), make_targets) == []


def test_run_step_checker_catches_violations(make_targets: set[str]) -> None:
    bad = {
        "jobs": {
            "j": {
                "steps": [
                    {"run": "echo hi"},
                    {"run": "make no-such-target-anywhere"},
                    {"run": "gitops bump --env staging --bogus"},
                    {"run": "make setup X=${{ github.event.pull_request.title }}"},
                    {"run": 'gitops status --env "$NOT_DECLARED"'},
                ]
            }
        }
    }
    problems = "\n".join(run_step_problems("bad.yml", bad, make_targets))
    for expected in ("not make or gitops", "no-such-target", "rejects", "expression", "undeclared"):
        assert expected in problems


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_uses_is_pinned_to_a_sha_with_version_comment(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = USES_LINE.match(line)
        if not match:
            continue
        ref, comment = match["ref"], (match["comment"] or "").strip()
        if ref.startswith("./"):
            continue  # a workflow of this repository, pinned by the commit itself
        assert PINNED.match(ref), f"{path.name}:{number}: {ref} is not pinned to a full SHA"
        assert VERSION_COMMENT.match(comment), f"{path.name}:{number}: no `# vX.Y.Z` comment"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_least_privilege(path: Path) -> None:
    doc = _load(path)
    top = doc.get("permissions")
    assert top == {} or (isinstance(top, dict) and set(top.values()) <= {"read", "none"}), (
        f"{path.name}: top-level permissions must be {{}} or read-only, got {top!r}"
    )
    for name, job in _jobs(doc).items():
        assert "permissions" in job, f"{path.name}:{name} has no job-level permissions"
        grants = job["permissions"] or {}
        if grants.get("id-token") == "write":
            uses = [s.get("uses", "") for s in job.get("steps", [])]
            assert any(u.startswith(("aws-actions/", "sigstore/")) for u in uses), (
                f"{path.name}:{name} asks for id-token but uses no OIDC consumer"
            )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_jobs_have_timeouts_and_pushers_are_serialised(path: Path) -> None:
    doc = _load(path)
    for name, job in _jobs(doc).items():
        if "uses" in job:
            continue  # a reusable workflow call: its jobs carry their own settings
        assert isinstance(job.get("timeout-minutes"), int), f"{path.name}:{name}: no timeout"
        grants = job.get("permissions") or {}
        checkouts = [
            s for s in job.get("steps", []) if s.get("uses", "").startswith("actions/checkout@")
        ]
        for step in checkouts:
            options = step.get("with", {})
            pushes = grants.get("contents") == "write" or "token" in options
            if pushes:
                assert "concurrency" in job or "concurrency" in doc, (
                    f"{path.name}:{name} pushes but has no concurrency group"
                )
            else:
                assert options.get("persist-credentials") is False, (
                    f"{path.name}:{name}: checkout must set persist-credentials: false"
                )


def _github_glob(pattern: str, path: str) -> bool:
    # GitHub's filter globs: `**` crosses directories, `*` does not; fnmatch's `*` does both,
    # which can only make a match more likely (a stricter test).
    return fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.rstrip("/*") + "/*")


def test_deploy_commits_never_retrain() -> None:
    doc = _load(ROOT / ".github" / "workflows" / "train-deploy.yml")
    paths = doc["on"]["push"]["paths"]
    deploy_files = [
        "overlays/staging/kustomization.yaml",
        "overlays/staging/model-card.json",
        "overlays/prod/kustomization.yaml",
        "overlays/prod/model-card.json",
    ]
    for file in deploy_files:
        hits = [p for p in paths if _github_glob(p, file)]
        assert not hits, f"train-deploy would run on a deploy commit touching {file}: {hits}"
    for ml_input in ("params.yaml", "dvc.lock", "data.dvc", "src/classifier/pipeline/train.py"):
        assert any(_github_glob(p, ml_input) for p in paths), f"{ml_input} does not retrain"


def test_ci_comments_metric_diff_once_per_pr() -> None:
    doc = _load(ROOT / ".github" / "workflows" / "ci.yml")
    assert "pull_request" in doc["on"]
    steps = [s for job in _jobs(doc).values() for s in job.get("steps", [])]
    sticky = [s for s in steps if "sticky-pull-request-comment" in s.get("uses", "")]
    assert len(sticky) == 1, "exactly one sticky comment step"
    assert sticky[0]["with"]["header"], "a header keeps it one comment across runs"
    assert any("metrics-diff-report" in s.get("run", "") for s in steps)


def test_train_deploy_signs_and_attests_the_image() -> None:
    doc = _load(ROOT / ".github" / "workflows" / "train-deploy.yml")
    steps = [s for job in _jobs(doc).values() for s in job.get("steps", [])]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["sbom"] is True
    assert str(build["with"]["provenance"]).startswith("mode=")
    assert any(s.get("uses", "").startswith("sigstore/cosign-installer@") for s in steps)
    assert any("sign-image" in s.get("run", "") for s in steps)
    assert any(s.get("run", "").startswith("gitops bump --env staging") for s in steps)
