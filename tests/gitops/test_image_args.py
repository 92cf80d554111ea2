"""`gitops image-args`: the Dockerfile's label build args from git and the model card, with the
standard library alone (`make ci-build-args` runs it without a venv, so the test does too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import DATA_HASH, REPO_ROOT, Sandbox, make_card


def image_args(sandbox: Sandbox, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -S: no site-packages (no PyYAML, no installed project): only the stdlib and src/.
    env = {k: v for k, v in sandbox.env.items() if not k.startswith("GITHUB_")}
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    return subprocess.run(
        [sys.executable, "-S", "-m", "gitops", "image-args", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_image_args_come_from_git_and_the_model_card(sandbox: Sandbox) -> None:
    ci = sandbox.clone("ci")
    (ci / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "1.2.3"\n')
    sandbox.git(ci, "add", "pyproject.toml")
    sandbox.git(ci, "commit", "--quiet", "-m", "version")
    revision = sandbox.git(ci, "rev-parse", "HEAD")
    make_card(revision, 0.91).save(ci / "build" / "model" / "model_card.json")

    result = image_args(sandbox, ci, "--model-dir", "build/model")

    assert result.returncode == 0, result.stderr
    values = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert values == {
        "MODEL_DIR": "build/model",
        "SOURCE_URL": str(sandbox.origin),
        "REVISION": revision,
        "CREATED": sandbox.git(ci, "show", "-s", "--format=%cI", revision),
        "VERSION": "1.2.3",
        "MODEL_VERSION": revision[:7],
        "MODEL_DATA_HASH": DATA_HASH,
        "MODEL_ACCURACY": "0.9100",
        "MODEL_BALANCED_ACCURACY": "0.8900",
        "MODEL_ROC_AUC": "0.9400",
        "MODEL_F1": "0.8600",
    }


def test_image_args_without_a_model_card_says_what_to_run(sandbox: Sandbox) -> None:
    ci = sandbox.clone("ci")
    result = image_args(sandbox, ci, "--model-dir", "models")
    assert result.returncode == 2
    assert "gitops image-args: error: " in result.stderr
    assert "model_card.json" in result.stderr
    assert "hint: run the pipeline first" in result.stderr
