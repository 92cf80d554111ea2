"""The offline JSON schemas `gitops validate` hands to kubeconform (`gitops validate schemas`).

Two sources, both fetched through package registries (no GitHub, no schema hosting):

* Kubernetes: the PyPI wheel `kubernetes-validate` (pinned by version and hash below) ships
  strict JSON schemas generated from the upstream OpenAPI for every minor version. Its files are
  laid out for its own resolver: each kind file has an `$id` under https://kubernetes.io/ and
  `$ref`s to `/api/_definitions.json#/$defs/...`, which kubeconform's file loader cannot follow
  (it tries to fetch https://kubernetes.io/api/... and fails). `kubernetes_schemas` rewrites them
  into the layout kubeconform expects (`v1.36.0-standalone-strict/deployment-apps-v1.json`) with
  the `$id` dropped and the refs pointing at a `_definitions.json` next to them. No file is
  otherwise changed: the schemas are still the upstream ones.
* Argo CD: the CRDs inside the `github.com/argoproj/argo-cd/v3` module (Go module proxy) are
  converted with `openapi2jsonschema.py` from the kubeconform module of the pinned version,
  with additional properties denied everywhere (strict, like `-strict` for core kinds).

Each source is built once into its folder and stamped with the pins it came from; changing a pin
(here, or the versions `make manifest-schemas` passes) rebuilds it, anything else is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitops.core.errors import OperationError, UsageError

# Kubernetes versions the rendered output must be valid for (Argo CD 3.5's tested range).
SUPPORTED_KUBERNETES_VERSIONS = ("1.33.0", "1.34.0", "1.35.0", "1.36.0")

# The core schemas: strict JSON schemas shipped in this PyPI wheel, pinned by version and hash.
KUBERNETES_VALIDATE_VERSION = "1.37.0"
KUBERNETES_VALIDATE_SHA256 = "85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9"

ARGOCD_MODULE = "github.com/argoproj/argo-cd/v3"
# Kyverno's ImageValidatingPolicy CRD (the admission policy in cluster/), from the kyverno module,
# converted like the Argo CD CRDs into the same folder (one CRD schema location for kubeconform).
KYVERNO_MODULE = "github.com/kyverno/kyverno"
KYVERNO_VERSION = "v1.19.1"
KYVERNO_CRDS = ("config/crds/policies.kyverno.io", "*_imagevalidatingpolicies.yaml")
KUBECONFORM_MODULE = "github.com/yannh/kubeconform"

WHEEL_SCHEMA_ROOT = "kubernetes_validate/kubernetes-json-schema"
DEFINITIONS = "_definitions.json"
UPSTREAM_REF_PREFIX = "/api/_definitions.json#"


def _rewrite_refs(node: Any, prefix: str) -> Any:
    """Return `node` with every upstream `$ref` re-rooted at `prefix` (`_definitions.json#`)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(UPSTREAM_REF_PREFIX):
                out[key] = prefix + value[len(UPSTREAM_REF_PREFIX) :]
            else:
                out[key] = _rewrite_refs(value, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, prefix) for item in node]
    return node


def kubernetes_schemas(wheel: Path, out: Path, versions: list[str]) -> int:
    """Extract the strict schemas of `versions` from the wheel into kubeconform's layout."""
    written = 0
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for version in versions:
            source = f"{WHEEL_SCHEMA_ROOT}/v{version}-local-strict/"
            members = [n for n in names if n.startswith(source) and n.endswith(".json")]
            if not members:
                available = sorted(
                    {n.split("/")[2] for n in names if n.startswith(WHEEL_SCHEMA_ROOT + "/v")}
                )
                raise UsageError(
                    f"{wheel.name} has no schemas for Kubernetes {version}; it has "
                    f"{', '.join(available)}",
                    "pick a supported version or a newer kubernetes-validate wheel",
                )
            target = out / f"v{version}-standalone-strict"
            target.mkdir(parents=True, exist_ok=True)
            for member in members:
                name = member.rsplit("/", 1)[1]
                schema = json.loads(archive.read(member))
                schema.pop("$id", None)
                if name == DEFINITIONS:
                    schema = _rewrite_refs(schema, "#")
                elif "x-kubernetes-group-version-kind" in schema:
                    schema = _rewrite_refs(schema, DEFINITIONS + "#")
                else:
                    continue  # sub-objects (affinity-v1.json ...): kubeconform never asks
                (target / name).write_text(json.dumps(schema, separators=(",", ":")))
                written += 1
            print(f">> Kubernetes {version}: {len(list(target.iterdir()))} schemas in {target}")
    return written


def argocd_schemas(crds: Path, converter: Path, out: Path, pattern: str = "*-crd.yaml") -> int:
    """Convert every CRD under `crds` matching `pattern` into `out/<group>/<kind>_<version>.json`
    (strict)."""
    crd_files = sorted(p for p in crds.glob(pattern))
    if not crd_files:
        raise OperationError(f"no {pattern} files in {crds}; is it the module's CRD folder?")
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **os.environ,
            "FILENAME_FORMAT": "{fullgroup}__{kind}_{version}",
            "DENY_ROOT_ADDITIONAL_PROPERTIES": "1",
        }
        subprocess.run(
            [sys.executable, str(converter), *map(str, crd_files)],
            cwd=scratch,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        written = 0
        for produced in sorted(Path(scratch).glob("*.json")):
            group, file_name = produced.name.split("__", 1)
            (out / group).mkdir(parents=True, exist_ok=True)
            shutil.move(produced, out / group / file_name)
            written += 1
    print(f">> {written} CRD schemas from {crds} in {out}")
    return written


# --- fetching the sources ----------------------------------------------------------------------


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise UsageError(f"{argv[0]} not found, needed to {what}") from exc
    if proc.returncode != 0:
        raise OperationError(
            f"could not {what}: `{' '.join(argv)}` failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout


def download_kubernetes_wheel(python: str, dest: Path) -> Path:
    """pip download of the pinned wheel, checked against its hash (pip's --require-hashes)."""
    dest.mkdir(parents=True, exist_ok=True)
    requirements = dest / "requirements.txt"
    requirements.write_text(
        f"kubernetes-validate=={KUBERNETES_VALIDATE_VERSION} "
        f"--hash=sha256:{KUBERNETES_VALIDATE_SHA256}\n"
    )
    print(f">> fetching kubernetes-validate {KUBERNETES_VALIDATE_VERSION} (PyPI)", flush=True)
    _run(
        [python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--require-hashes", "-r", str(requirements), "-d", str(dest)],
        "download the kubernetes-validate wheel",
    )  # fmt: skip
    return dest / f"kubernetes_validate-{KUBERNETES_VALIDATE_VERSION}-py3-none-any.whl"


def go_module_dir(go: str, module: str, version: str, scratch: Path) -> Path:
    """`go mod download -json module@version`: where the module landed in GOMODCACHE. Run in a
    folder without go.mod, so no project's module graph is involved."""
    print(f">> fetching {module}@{version} (Go module proxy)", flush=True)
    out = _run([go, "mod", "download", "-json", f"{module}@{version}"], f"fetch {module}", scratch)
    return Path(json.loads(out)["Dir"])


@dataclass(frozen=True)
class SchemaSources:
    """What the schemas are built from: the tools that fetch them and the pinned versions."""

    python: str  # an interpreter with pip (the uv venv has none)
    go: str
    argocd_version: str  # the Argo CD the sandbox runs (sandbox/tools/versions.sh)
    kubeconform_version: str  # the kubeconform that validates (its converter script)


def stamps(out: Path, sources: SchemaSources) -> tuple[Path, Path]:
    """The files that say the Kubernetes and the Argo CD schemas under `out` are current: their
    names carry the pins and a hash of this module (a change to the conversion rebuilds too)."""
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    versions = "_".join(SUPPORTED_KUBERNETES_VERSIONS)
    return (
        out
        / "kubernetes"
        / f".kubernetes-validate-{KUBERNETES_VALIDATE_VERSION}-{versions}-{code}",
        out / "argo-cd" / f".argo-cd-{sources.argocd_version}-kyverno-{KYVERNO_VERSION}-"
        f"{sources.kubeconform_version}-{code}",
    )


def build_schemas(out: Path, sources: SchemaSources) -> None:
    """Build `out/kubernetes` and `out/argo-cd` (Argo CD's and Kyverno's CRDs), each only when
    its stamp is missing."""
    k8s, argocd = out / "kubernetes", out / "argo-cd"
    k8s_stamp, argocd_stamp = stamps(out, sources)
    if k8s_stamp.is_file():
        print(f">> Kubernetes schemas up to date in {k8s}")
    else:
        shutil.rmtree(k8s, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="gitops-schemas-") as scratch:
            wheel = download_kubernetes_wheel(sources.python, Path(scratch))
            kubernetes_schemas(wheel, k8s, list(SUPPORTED_KUBERNETES_VERSIONS))
        k8s_stamp.touch()
    if argocd_stamp.is_file():
        print(f">> Argo CD schemas up to date in {argocd}")
    else:
        shutil.rmtree(argocd, ignore_errors=True)
        argocd.mkdir(parents=True)
        with tempfile.TemporaryDirectory(prefix="gitops-schemas-") as scratch:
            argocd_dir = go_module_dir(
                sources.go, ARGOCD_MODULE, sources.argocd_version, Path(scratch)
            )
            kubeconform_dir = go_module_dir(
                sources.go, KUBECONFORM_MODULE, sources.kubeconform_version, Path(scratch)
            )
            converter = kubeconform_dir / "scripts" / "openapi2jsonschema.py"
            argocd_schemas(argocd_dir / "manifests" / "crds", converter, argocd)
            kyverno_dir = go_module_dir(sources.go, KYVERNO_MODULE, KYVERNO_VERSION, Path(scratch))
            folder, pattern = KYVERNO_CRDS
            argocd_schemas(kyverno_dir / folder, converter, argocd, pattern)
        argocd_stamp.touch()
