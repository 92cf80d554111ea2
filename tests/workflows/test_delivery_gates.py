"""What makes a reviewed build the only way into prod, on GitHub's side (docs/delivery.md,
"An approval covers what merges"): main's ruleset, the promotion PR's required check, and the
credentials the digest check needs in the jobs that deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
RULESET = ROOT / ".github" / "rulesets" / "main.json"
GITHUB_ACTIONS_APP = 15368  # the integration id of GitHub Actions' check runs


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    if True in doc:  # PyYAML reads the bare key `on` as True
        doc["on"] = doc.pop(True)
    return doc


def _rules() -> dict[str, dict[str, Any]]:
    ruleset = json.loads(RULESET.read_text())
    return {rule["type"]: rule.get("parameters", {}) for rule in ruleset["rules"]}


def test_main_ruleset_dismisses_stale_approvals_and_requires_the_last_push_reviewed() -> None:
    ruleset = json.loads(RULESET.read_text())
    assert ruleset["target"] == "branch"
    assert ruleset["enforcement"] == "active"
    assert ruleset["conditions"]["ref_name"]["include"] == ["~DEFAULT_BRANCH"]
    rules = _rules()
    assert {"deletion", "non_fast_forward", "pull_request", "required_status_checks"} <= set(rules)
    review = rules["pull_request"]
    assert review["dismiss_stale_reviews_on_push"] is True
    assert review["require_last_push_approval"] is True
    assert review["require_code_owner_review"] is True
    assert review["required_approving_review_count"] >= 1
    # the only bypass: the delivery App (pushes deploy and rollback commits of staging)
    assert [a["actor_type"] for a in ruleset["bypass_actors"]] == ["Integration"]


def test_required_checks_are_jobs_that_run_on_every_pull_request() -> None:
    checks = _rules()["required_status_checks"]
    assert checks["strict_required_status_checks_policy"] is True
    required = {c["context"] for c in checks["required_status_checks"]}
    assert all(c["integration_id"] == GITHUB_ACTIONS_APP for c in checks["required_status_checks"])
    on_every_pr = set()
    for path in sorted(WORKFLOWS.glob("*.yml")):
        doc = _load(path)
        trigger = doc["on"].get("pull_request") if isinstance(doc["on"], dict) else None
        if "pull_request" not in doc["on"] or (trigger and "paths" in trigger):
            continue  # a path-filtered check would stay pending on other PRs and block them
        on_every_pr |= {job.get("name", key) for key, job in doc["jobs"].items() if "if" not in job}
    assert "promotion check" in required
    assert required <= on_every_pr, f"required but never reported: {required - on_every_pr}"


def test_promotion_check_verifies_staging_through_argo_cd() -> None:
    doc = _load(WORKFLOWS / "promotion-check.yml")
    assert doc["on"] == {"pull_request": {"branches": ["main"]}}
    (job,) = doc["jobs"].values()
    assert job["name"] == "promotion check"
    assert job["permissions"] == {"contents": "read"}
    check = [s for s in job["steps"] if s.get("run") == "make promotion-check"]
    assert len(check) == 1
    assert set(check[0]["env"]) == {"ARGOCD_SERVER", "ARGOCD_AUTH_TOKEN"}
    checkout = job["steps"][0]
    assert checkout["with"]["fetch-depth"] >= 2, "the base (first parent) must be there"


def test_jobs_that_deploy_can_ask_the_registry_and_never_push_with_github_token() -> None:
    deploying = 0
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for name, job in _load(path)["jobs"].items():
            grants = job.get("permissions") or {}
            assert grants.get("contents") != "write", (
                f"{path.name}:{name} pushes with GITHUB_TOKEN, which main's ruleset cannot let "
                "bypass; push with the delivery App's token"
            )
            for step in job.get("steps", []):
                if step.get("run", "").startswith(("gitops bump", "gitops promote")):
                    deploying += 1
                    assert {"REGISTRY_USERNAME", "REGISTRY_PASSWORD"} <= set(step.get("env", {}))
                    assert grants.get("packages") in {"read", "write"}, f"{path.name}:{name}"
    assert deploying == 2  # train-deploy's bump and promote.yml's promote
