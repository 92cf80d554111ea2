"""Build the offline JSON schemas that `make validate` hands to kubeconform.

Two sources, both fetched through package registries (no GitHub, no schema hosting):

* Kubernetes: the PyPI wheel `kubernetes-validate` ships strict JSON schemas generated from the
  upstream OpenAPI for every minor version. Its files are laid out for its own resolver: each
  kind file has an `$id` under https://kubernetes.io/ and `$ref`s to
  `/api/_definitions.json#/$defs/...`, which kubeconform's file loader cannot follow (it tries
  to fetch https://kubernetes.io/api/... and fails). `kubernetes` below rewrites them into the
  layout kubeconform expects (`v1.36.0-standalone-strict/deployment-apps-v1.json`) with the
  `$id` dropped and the refs pointing at a `_definitions.json` next to them. No file is
  otherwise changed: the schemas are still the upstream ones.
* Argo CD: the CRDs inside the `github.com/argoproj/argo-cd/v3` module (Go module proxy) are
  converted with `openapi2jsonschema.py` from the kubeconform module of the pinned version,
  with additional properties denied everywhere (strict, like `-strict` for core kinds).
  The same conversion (`--pattern`) turns other CRDs from Go modules into schemas, e.g. Kyverno's
  ImageValidatingPolicy (`github.com/kyverno/kyverno`, config/crds/policies.kyverno.io).

Usage (what mk/manifests.mk runs):
    python tools/manifest_schemas.py kubernetes --wheel W.whl --out DIR --version 1.36.0 ...
    python tools/manifest_schemas.py argocd --crds DIR --converter openapi2jsonschema.py --out DIR
        [--pattern GLOB]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

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
                sys.exit(
                    f"error: {wheel.name} has no schemas for Kubernetes {version}; it has "
                    f"{', '.join(available)}. Pick a supported version or a newer wheel."
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
        sys.exit(f"error: no {pattern} files in {crds}; is it the module's CRD folder?")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="source", required=True)
    k8s = sub.add_parser("kubernetes", help="core schemas from the kubernetes-validate wheel")
    k8s.add_argument("--wheel", type=Path, required=True)
    k8s.add_argument("--out", type=Path, required=True)
    k8s.add_argument("--version", action="append", required=True, help="e.g. 1.36.0")
    argo = sub.add_parser("argocd", help="CRD schemas from the argo-cd module's manifests/crds")
    argo.add_argument("--crds", type=Path, required=True)
    argo.add_argument("--converter", type=Path, required=True)
    argo.add_argument("--out", type=Path, required=True)
    argo.add_argument("--pattern", default="*-crd.yaml", help="CRD file names (glob)")
    args = parser.parse_args(argv)
    if args.source == "kubernetes":
        kubernetes_schemas(args.wheel, args.out, args.version)
    else:
        argocd_schemas(args.crds, args.converter, args.out, args.pattern)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
