"""`gitops validate`: render and validate the Kubernetes and Argo CD manifests, offline.

One entry point for people, CI (`make validate`) and the tests alike:

    gitops validate                    # overlays/staging, overlays/prod, argocd/, staging vs prod
    gitops validate --overlay DIR      # just one kustomization (repeatable)
    gitops validate schemas ...        # build the offline schemas it needs (`make manifest-tools`)

The checks are in `manifests`, the schema building in `schemas`; this module turns a request
into a run and a report. Exit 0: valid; 1: findings (all listed); 2: bad input or missing tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gitops.commands.validate.manifests import (
    ENVIRONMENTS,
    ROOT,
    ManifestError,
    Toolchain,
    display,
    validate_all,
)
from gitops.commands.validate.schemas import (
    SUPPORTED_KUBERNETES_VERSIONS,
    SchemaSources,
    build_schemas,
)
from gitops.commands.validate.train import rules_for, train_kustomizations
from gitops.core.errors import UsageError

__all__ = ["ROOT", "SchemaSources", "ValidateRequest", "build_schemas", "validate"]


@dataclass(frozen=True)
class ValidateRequest:
    # None given (and no argocd/compare): the whole repository. A kustomization under k8s-train/
    # is the training Job: rendered with a pinned example image, checked by its own policies.
    overlays: Sequence[Path] = ()
    argocd: Path | None = None
    cluster: Path | None = None  # the admission policy kustomization (Kyverno)
    compare: tuple[Path, Path] | None = None
    versions: Sequence[str] = ()  # default: SUPPORTED_KUBERNETES_VERSIONS
    out: Path = ROOT / "build" / "manifests"
    scanners: bool = True


def validate(req: ValidateRequest) -> int:
    """Run every check, print the report; the exit code (0 valid, 1 findings)."""
    versions = list(req.versions) or list(SUPPORTED_KUBERNETES_VERSIONS)
    for version in versions:
        if version not in SUPPORTED_KUBERNETES_VERSIONS:
            raise UsageError(
                f"--kubernetes-version {version} is not supported",
                f"choose from {', '.join(SUPPORTED_KUBERNETES_VERSIONS)} "
                "(schemas exist only for those)",
            )
    overlays, argocd, cluster = list(req.overlays), req.argocd, req.cluster
    compare = req.compare
    if not (overlays or argocd or cluster or compare):  # the whole repository
        overlays = [ROOT / "overlays" / env for env in ENVIRONMENTS]
        # The training Job (k8s-train/): base and overlays, checked by validate.train's rules.
        overlays += train_kustomizations()
        argocd, cluster = ROOT / "argocd", ROOT / "cluster"
        compare = (overlays[0], overlays[1])
    extra = [p for p in (argocd, cluster) if p is not None]
    for path in [*overlays, *extra, *(compare or ())]:
        if not (path / "kustomization.yaml").is_file():
            raise UsageError(f"{path} has no kustomization.yaml", "pass a kustomization directory")

    tools = Toolchain.from_env()
    missing = [
        m for m in tools.missing() if req.scanners or not m.startswith(("checkov", "kube-score"))
    ]
    if missing:
        raise UsageError("; ".join(missing), "run `make manifest-tools` first")
    try:
        report = validate_all(
            tools,
            overlays,
            argocd=argocd,
            cluster=cluster,
            compare=compare,
            versions=versions,
            out=req.out,
            scanners=req.scanners,
            rules=rules_for,
        )
    except ManifestError as error:
        raise UsageError(str(error)) from error
    for line in report.checked:
        print(f"ok   {line}")
    for finding in report.findings:
        print(f"FAIL {finding}")
    if report.ok:
        print(f"manifests valid: rendered output in {display(req.out)}")
        return 0
    print(
        f"manifests INVALID: {len(report.findings)} problem(s) above; "
        f"rendered output in {display(req.out)}"
    )
    return 1
