"""`gitops image-args`: the Dockerfile's label build args for builds that do not go through
docker/build.sh.

On GitHub the image is built by docker/build-push-action (for SBOM and provenance); this prints
the same `KEY=VALUE` build args docker/build.sh passes (OCI labels: revision, source, created,
version; model labels from the model card), one per line, which is the format the action's
`build-args` input takes. Standard library only (like `gitops.cli` and `gitops.core.errors`,
all it imports): `make ci-build-args` runs it without a venv.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from classifier.model_card import ModelCard, ModelCardError
from gitops.core.errors import UsageError


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def build_args(model_dir: Path, revision: str | None = None) -> dict[str, str]:
    card = ModelCard.load(model_dir / "model_card.json")
    rev = revision or _git("rev-parse", "HEAD")
    server, repository = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    if server and repository:
        source = f"{server}/{repository}"
    else:  # like docker/build.sh: the origin remote, else this checkout
        remote = subprocess.run(
            ["git", "config", "remote.origin.url"], capture_output=True, text=True, check=False
        ).stdout.strip()
        source = remote or f"file://{Path.cwd()}"
    with Path("pyproject.toml").open("rb") as fh:
        version = str(tomllib.load(fh)["project"]["version"])
    return {
        "MODEL_DIR": str(model_dir),
        "SOURCE_URL": source,
        "REVISION": rev,
        "CREATED": _git("show", "-s", "--format=%cI", rev),  # the commit's time: reproducible
        "VERSION": version,
        "MODEL_VERSION": card.version,
        "MODEL_DATA_HASH": card.data_hash,
        "MODEL_ACCURACY": f"{card.metrics['accuracy']:.4f}",
        "MODEL_BALANCED_ACCURACY": f"{card.metrics['balanced_accuracy']:.4f}",
        "MODEL_ROC_AUC": f"{card.metrics['roc_auc']:.4f}",
        "MODEL_F1": f"{card.metrics['f1']:.4f}",
    }


def image_args(model_dir: Path, revision: str | None = None) -> dict[str, str]:
    """Print the build args, one `KEY=VALUE` per line, and return them."""
    try:
        values = build_args(model_dir, revision)
    except ModelCardError as exc:
        raise UsageError(str(exc), "run the pipeline first") from exc
    except subprocess.CalledProcessError as exc:
        raise UsageError(f"`{' '.join(exc.cmd)}` failed: {exc.stderr}") from exc
    print("\n".join(f"{key}={value}" for key, value in values.items()))
    return values
