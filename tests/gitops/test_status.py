"""`gitops status` reads what each environment runs from git alone."""

from __future__ import annotations

import json
import subprocess
import sys


def test_status_json_reports_each_environment(sandbox) -> None:
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "one")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", revision, 0.93)).returncode == 0

    result = sandbox.gitops(ci, "status", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report) == ["prod", "staging"]
    staging = report["staging"]
    assert staging["digest"] == sandbox.digest_for(revision)
    assert staging["tag"] == revision
    assert staging["source_revision"] == revision
    assert staging["metrics"]["accuracy"] == 0.93
    assert staging["deploy_action"] == "bump"
    assert staging["deployed_at"].startswith("20")
    assert report["prod"]["digest"] is None
    assert report["prod"]["metrics"] == {}


def test_status_text_names_image_and_metrics(sandbox) -> None:
    ci = sandbox.clone("ci")
    revision = sandbox.source_commit(ci, "one")
    assert sandbox.gitops(ci, *sandbox.bump_args("staging", revision, 0.93)).returncode == 0

    result = sandbox.gitops(ci, "status", "--env", "staging")

    assert result.returncode == 0, result.stderr
    assert f"{sandbox.IMAGE}:{revision}" in result.stdout
    assert "accuracy 0.9300" in result.stdout
    assert "prod" not in result.stdout


def test_cli_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gitops", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("bump", "promote", "rollback", "status"):
        assert command in result.stdout
