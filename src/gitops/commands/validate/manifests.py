"""The checks of `gitops validate`: render each kustomization with the pinned kustomize, then
report every failure (not just the first):

* schemas: kubeconform `-strict` against the JSON schemas of each supported Kubernetes version,
  offline (`.tools/schemas`, built by `gitops validate schemas`, see `schemas`);
* policies: what no scanner checks (the HPA owns the replicas, the PDB and the Service select
  the pods, topology spread, allowed volume types, images pinned by digest and never `latest`);
* scanners: checkov (kubernetes framework) and kube-score, with every skipped check listed in
  CHECKOV_SKIPS / KUBE_SCORE_SKIPS together with its reason.

`argocd/` is validated against the Argo CD CRD schemas, `cluster/` (the admission policy)
against Kyverno's, and staging and prod may differ only at the paths in ENVIRONMENT_DIFF_ALLOWED.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gitops.commands.validate.schemas import SUPPORTED_KUBERNETES_VERSIONS

# The source checkout: the manifests and the pinned tools (.tools) live beside this package.
ROOT = Path(__file__).resolve().parents[4]

ENVIRONMENTS = ("staging", "prod")

# Volume types a classifier pod may use: scratch space and configuration, never node or
# network storage (the service is stateless; the model is baked into the image).
ALLOWED_VOLUME_TYPES = frozenset({"emptyDir", "configMap", "secret", "projected", "downwardAPI"})

# The only paths (kind/name:dotted.path, fnmatch patterns) where the rendered staging and prod
# may differ. Each is explained in docs/environments.md.
ENVIRONMENT_DIFF_ALLOWED = (
    "*:metadata.namespace",  # every namespaced object lives in its environment's namespace
    "Namespace/*:metadata.name",  # ... which the overlay creates
    "Deployment/elpv-classifier:spec.template.spec.containers.*.image",  # promoted separately
    "Deployment/elpv-classifier:spec.template.spec.containers.*.resources.*",  # resources.yaml
    "HorizontalPodAutoscaler/elpv-classifier:spec.minReplicas",  # hpa-bounds.yaml
    "HorizontalPodAutoscaler/elpv-classifier:spec.maxReplicas",  # hpa-bounds.yaml
    # staging scales down after 1 quiet minute, not 5 (hpa-bounds.yaml: the HPA load test)
    "HorizontalPodAutoscaler/elpv-classifier:spec.behavior.scaleDown.*",
    "Ingress/elpv-classifier:spec.ingressClassName",  # ingress-host.yaml
    "Ingress/elpv-classifier:spec.rules.*.host",  # ingress-host.yaml
    "Ingress/elpv-classifier:spec.tls.*",  # ingress-host.yaml (when TLS is added)
    "ConfigMap/elpv-classifier-config:data.CLASSIFIER_LOG_LEVEL",  # config.yaml
)

# checkov checks we skip, each with the reason (shown in every report).
CHECKOV_SKIPS: Mapping[str, str] = {
    "CKV_K8S_35": (
        "secrets as files: the service contract (docs/architecture.md) reads the optional "
        "CLASSIFIER_API_TOKEN from the environment; it comes from a namespaced Secret by name, "
        "and the container runs read-only, non-root, with no capabilities"
    ),
}

# kube-score checks we skip, each with the reason.
KUBE_SCORE_SKIPS: Mapping[str, str] = {
    "container-image-pull-policy": (
        "images are pinned by digest, so IfNotPresent can never start a different image; "
        "Always would only add a registry round trip to every pod start"
    ),
    "deployment-has-host-podantiaffinity": (
        "topologySpreadConstraints on kubernetes.io/hostname spread the pods instead; "
        "required anti-affinity would stop the HPA from scaling past the node count"
    ),
}

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# kustomize's configMapGenerator suffix: the name plus "-" and a 10-character hash.
_GENERATED_SUFFIX = re.compile(r"-[a-z0-9]{10}$")

Resource = dict[str, Any]


class ManifestError(RuntimeError):
    """A tool could not run or its output could not be read (not a validation finding)."""


@dataclass(frozen=True)
class Finding:
    """One problem in one rendered kustomization, with what to do about it."""

    source: str  # the kustomization (or "staging vs prod")
    check: str  # schemas[1.36.0], policy:<name>, checkov:<id>, kube-score:<id>, ...
    resource: str  # Kind/name
    message: str

    def __str__(self) -> str:
        return f"{self.source}: [{self.check}] {self.resource}: {self.message}"


@dataclass(frozen=True)
class Toolchain:
    """The pinned binaries and schema folders (built by `make manifest-tools`)."""

    kustomize: Path
    kubeconform: Path
    checkov: Path | None
    kube_score: Path | None
    kubernetes_schemas: Path
    argocd_schemas: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Toolchain:
        """Paths from the variables mk/manifests.mk exports, else the defaults under .tools."""
        env = os.environ if env is None else env
        tools = ROOT / ".tools"
        checkovs = sorted(tools.glob("checkov-*/bin/checkov"))

        def pick(name: str, default: Path | None) -> Path | None:
            value = env.get(name)
            return Path(value) if value else default

        return cls(
            kustomize=pick("KUSTOMIZE", tools / "bin" / "kustomize") or Path("kustomize"),
            kubeconform=pick("KUBECONFORM", tools / "bin" / "kubeconform") or Path(),
            checkov=pick("CHECKOV", checkovs[-1] if checkovs else None),
            kube_score=pick("KUBE_SCORE", tools / "bin" / "kube-score"),
            kubernetes_schemas=pick("K8S_SCHEMAS", tools / "schemas" / "kubernetes") or Path(),
            argocd_schemas=pick("ARGOCD_SCHEMAS", tools / "schemas" / "argo-cd") or Path(),
        )

    def missing(self) -> list[str]:
        """What is not there yet, phrased as what to run."""
        problems = [
            f"{label} not found at {path}"
            for label, path in (
                ("kustomize", self.kustomize),
                ("kubeconform", self.kubeconform),
                ("checkov", self.checkov),
                ("kube-score", self.kube_score),
            )
            if path is None or not path.is_file()
        ]
        for version in SUPPORTED_KUBERNETES_VERSIONS:
            folder = self.kubernetes_schemas / f"v{version}-standalone-strict"
            if not folder.is_dir():
                problems.append(f"Kubernetes {version} schemas not found in {folder}")
        if not (self.argocd_schemas / "argoproj.io").is_dir():
            problems.append(f"Argo CD CRD schemas not found in {self.argocd_schemas}")
        if not (self.argocd_schemas / "policies.kyverno.io").is_dir():
            problems.append(f"Kyverno CRD schemas not found in {self.argocd_schemas}")
        return problems


@dataclass
class Report:
    """What one `validate` run checked and found."""

    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # one line per source: what passed

    @property
    def ok(self) -> bool:
        return not self.findings


# --- rendering -------------------------------------------------------------------------------


def render(kustomize: Path, directory: Path) -> str:
    """`kustomize build directory`; raises ManifestError with kustomize's own message."""
    result = subprocess.run(
        [str(kustomize), "build", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ManifestError(f"kustomize build {directory} failed: {result.stderr.strip()}")
    return result.stdout


def parse(rendered: str) -> list[Resource]:
    """The YAML stream as a list of objects (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(rendered) if isinstance(doc, dict)]


def ref(resource: Mapping[str, Any]) -> str:
    """`Kind/name`, how findings name a resource."""
    return f"{resource.get('kind', '?')}/{resource.get('metadata', {}).get('name', '?')}"


def _pod_templates(resources: Iterable[Resource]) -> Iterator[tuple[Resource, Resource]]:
    """(workload, pod template) for every kind that carries one."""
    for resource in resources:
        if resource.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield resource, resource.get("spec", {}).get("template", {})
        elif resource.get("kind") == "CronJob":
            job = resource.get("spec", {}).get("jobTemplate", {}).get("spec", {})
            yield resource, job.get("template", {})
        elif resource.get("kind") == "Pod":
            yield resource, resource


def _containers(pod_template: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod_template.get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels + matchExpressions) matches `labels`."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


# --- project policies (what no scanner checks) -----------------------------------------------


def check_hpa_owns_replicas(resources: Sequence[Resource]) -> list[str]:
    """Every Deployment is scaled by an HPA that targets it, and sets no `replicas` itself."""
    problems: list[str] = []
    deployments = {r["metadata"]["name"]: r for r in resources if r.get("kind") == "Deployment"}
    targeted: set[str] = set()
    for hpa in (r for r in resources if r.get("kind") == "HorizontalPodAutoscaler"):
        target = hpa.get("spec", {}).get("scaleTargetRef", {})
        name = target.get("name", "")
        if target.get("kind") != "Deployment" or name not in deployments:
            problems.append(
                f"{ref(hpa)}: scaleTargetRef {target.get('kind')}/{name} is not a Deployment "
                "in this output; point it at the Deployment it should scale"
            )
            continue
        targeted.add(name)
    for name, deployment in deployments.items():
        if "replicas" in deployment.get("spec", {}):
            problems.append(
                f"{ref(deployment)}: sets spec.replicas={deployment['spec']['replicas']} although "
                "an HPA owns the replica count (every sync would fight the HPA); remove "
                "`replicas` and change minReplicas/maxReplicas in hpa-bounds.yaml instead"
            )
        if name not in targeted:
            problems.append(
                f"{ref(deployment)}: no HorizontalPodAutoscaler targets it; add one "
                "(k8s-base/hpa.yaml) so the replica count is owned by the HPA"
            )
    return problems


def check_selectors_match_pods(resources: Sequence[Resource]) -> list[str]:
    """The PodDisruptionBudget and the Service select the workload's pods (and exist)."""
    problems: list[str] = []
    pod_labels = [tpl.get("metadata", {}).get("labels", {}) for _, tpl in _pod_templates(resources)]
    if not pod_labels:
        return problems
    for kind, path in (("PodDisruptionBudget", ("selector",)), ("Service", ())):
        selecting = [r for r in resources if r.get("kind") == kind]
        if not selecting:
            problems.append(f"{kind}: none in the output; the pods need one (k8s-base)")
        for resource in selecting:
            spec = resource.get("spec", {})
            if kind == "Service":
                selector: Mapping[str, Any] = {"matchLabels": spec.get("selector", {})}
            else:
                selector = spec.get(*path, {})
            if not any(_selects(selector, labels) for labels in pod_labels):
                problems.append(
                    f"{ref(resource)}: selector {json.dumps(selector, sort_keys=True)} matches "
                    "no pod template in the output; use the pods' labels "
                    "(app.kubernetes.io/name, app.kubernetes.io/component)"
                )
    return problems


def check_topology_spread(resources: Sequence[Resource]) -> list[str]:
    """Every pod template spreads its own pods over nodes."""
    problems: list[str] = []
    for workload, template in _pod_templates(resources):
        constraints = template.get("spec", {}).get("topologySpreadConstraints", [])
        labels = template.get("metadata", {}).get("labels", {})
        if not constraints:
            problems.append(
                f"{ref(workload)}: no topologySpreadConstraints; replicas could all land on "
                "one node (see k8s-base/deployment.yaml)"
            )
            continue
        keys = {c.get("topologyKey") for c in constraints}
        if "kubernetes.io/hostname" not in keys:
            problems.append(f"{ref(workload)}: no spread over kubernetes.io/hostname")
        for constraint in constraints:
            if not _selects(constraint.get("labelSelector", {}), labels):
                problems.append(
                    f"{ref(workload)}: topology spread on {constraint.get('topologyKey')} "
                    "does not select the workload's own pods (labelSelector vs pod labels)"
                )
    return problems


def check_volume_types(resources: Sequence[Resource]) -> list[str]:
    """Pods use only the volume types in ALLOWED_VOLUME_TYPES."""
    problems: list[str] = []
    for workload, template in _pod_templates(resources):
        for volume in template.get("spec", {}).get("volumes", []):
            types = set(volume) - {"name"}
            if not types <= ALLOWED_VOLUME_TYPES:
                problems.append(
                    f"{ref(workload)}: volume {volume.get('name')!r} is of type "
                    f"{', '.join(sorted(types - ALLOWED_VOLUME_TYPES))}; only "
                    f"{', '.join(sorted(ALLOWED_VOLUME_TYPES))} are allowed "
                    "(the service is stateless and its model is in the image)"
                )
    return problems


def check_images_pinned(resources: Sequence[Resource]) -> list[str]:
    """Every image is `name:tag@sha256:<digest>`, and the tag is never `latest`."""
    problems: list[str] = []
    for workload, template in _pod_templates(resources):
        for container in _containers(template):
            image = str(container.get("image", ""))
            name_and_tag = image.split("@", 1)[0]
            last = name_and_tag.rsplit("/", 1)[-1]
            tag = last.split(":", 1)[1] if ":" in last else ""
            where = f"{ref(workload)}: container {container.get('name')!r} image {image!r}"
            if not _DIGEST.search(image):
                problems.append(
                    f"{where} is not pinned by digest; set newTag and digest in the overlay's "
                    "images: (`kustomize edit set image elpv-classifier=NAME:TAG@sha256:...`)"
                )
            if tag in {"", "latest"}:
                problems.append(
                    f"{where} has tag {tag or '(none)'!r}; use the git SHA the image was "
                    "built from so the deployed revision is readable"
                )
    return problems


Policy = Callable[[Sequence[Resource]], list[str]]

POLICIES: Mapping[str, Policy] = {
    "hpa-owns-replicas": check_hpa_owns_replicas,
    "selectors-match-pods": check_selectors_match_pods,
    "topology-spread": check_topology_spread,
    "volume-types": check_volume_types,
    "images-pinned": check_images_pinned,
}


@dataclass(frozen=True)
class Rules:
    """How one kind of kustomization is rendered and which project policies it must pass."""

    render: Callable[[Path, Path], str] = render
    policies: Mapping[str, Policy] = field(default_factory=lambda: POLICIES)


def check_policies(
    source: str,
    resources: Sequence[Resource],
    policies: Mapping[str, Policy] = POLICIES,
) -> list[Finding]:
    findings: list[Finding] = []
    for name, policy in policies.items():
        for problem in policy(resources):
            resource, _, message = problem.partition(": ")
            findings.append(Finding(source, f"policy:{name}", resource, message))
    return findings


# --- schemas (kubeconform) -------------------------------------------------------------------


def _schema_locations(tools: Toolchain) -> list[str]:
    k8s = (
        f"{tools.kubernetes_schemas}/{{{{ .NormalizedKubernetesVersion }}}}-standalone"
        "{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )
    crds = (
        f"{tools.argocd_schemas}/{{{{ .Group }}}}/"
        "{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
    )
    return [k8s, crds]


def check_schemas(
    tools: Toolchain, files: Mapping[Path, str], versions: Sequence[str]
) -> list[Finding]:
    """kubeconform -strict, offline, once per Kubernetes version over all rendered `files`
    (path -> source name). A kind without a schema (removed API, missing CRD) fails too."""
    findings: list[Finding] = []
    if not files:
        return findings
    by_path = {str(path): source for path, source in files.items()}
    locations = [arg for loc in _schema_locations(tools) for arg in ("-schema-location", loc)]
    for version in versions:
        result = subprocess.run(
            [
                str(tools.kubeconform),
                "-strict",
                "-output",
                "json",
                "-kubernetes-version",
                version,
                *locations,
                *by_path,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError as error:
            raise ManifestError(
                f"kubeconform gave no JSON report (exit {result.returncode}): {result.stderr}"
            ) from error
        found = 0
        for item in report.get("resources") or []:
            if item.get("status") in {"statusValid", "statusSkipped", "statusEmpty"}:
                continue
            errors = item.get("validationErrors") or []
            details = [f"{e.get('path') or '/'}: {e.get('msg')}" for e in errors]
            raw = str(item.get("msg", "invalid"))
            # kubeconform's JSON lists only the top-level cause ("/spec: validation failed");
            # the message carries the precise location: "... with '<schema>' - at '/spec/...': ..."
            if "' - " in raw:
                message = raw.split("' - ", 1)[1]
            else:
                message = raw if raw != "invalid" or not details else "; ".join(details)
            if "could not find schema" in message:
                message += (
                    f" (Kubernetes {version} and the Argo CD CRDs have no {item.get('version')} "
                    f"{item.get('kind')}: a removed API version, or a kind that needs a CRD)"
                )
            source = by_path.get(str(item.get("filename")), str(item.get("filename")))
            resource = f"{item.get('kind')}/{item.get('name')}"
            findings.append(Finding(source, f"schemas[{version}]", resource, message))
            found += 1
        if result.returncode != 0 and not found:
            raise ManifestError(f"kubeconform failed: {result.stderr.strip() or result.stdout}")
    return findings


# --- scanners --------------------------------------------------------------------------------


def check_checkov(tools: Toolchain, files: Mapping[Path, str]) -> list[Finding]:
    """checkov's kubernetes framework over the rendered files (one run for all of them)."""
    if tools.checkov is None:
        raise ManifestError("checkov not found: run `make manifest-tools`")
    result = subprocess.run(
        [
            str(tools.checkov),
            "--framework",
            "kubernetes",
            *(arg for path in files for arg in ("--file", str(path))),
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",  # offline: no guidelines or policies from the vendor's API
            "--skip-check",
            ",".join(CHECKOV_SKIPS),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise ManifestError(
            f"checkov gave no JSON (exit {result.returncode}): {result.stderr}"
        ) from error
    reports = report if isinstance(report, list) else [report]
    by_name = {path.name: source for path, source in files.items()}
    findings: list[Finding] = []
    for item in reports:
        for failed in item.get("results", {}).get("failed_checks", []):
            source = by_name.get(Path(failed.get("file_path", "")).name, "?")
            kind, _, name = str(failed.get("resource", "")).partition(".")
            findings.append(
                Finding(
                    source,
                    f"checkov:{failed.get('check_id')}",
                    f"{kind}/{name.rsplit('.', 1)[-1]}",
                    str(failed.get("check_name")),
                )
            )
    return findings


def check_kube_score(tools: Toolchain, source: str, rendered: Path) -> list[Finding]:
    """kube-score: warnings fail too; the skipped checks are KUBE_SCORE_SKIPS."""
    if tools.kube_score is None:
        raise ManifestError("kube-score not found: run `make manifest-tools`")
    ignores = [arg for check in KUBE_SCORE_SKIPS for arg in ("--ignore-test", check)]
    result = subprocess.run(
        [
            str(tools.kube_score),
            "score",
            "--output-format",
            "ci",
            "--exit-one-on-warning",
            "--kubernetes-version",
            "v" + ".".join(SUPPORTED_KUBERNETES_VERSIONS[0].split(".")[:2]),
            *ignores,
            str(rendered),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    findings: list[Finding] = []
    # ci format: "[CRITICAL] <name>/<namespace> <apiVersion>/<Kind>: <message>"
    line_format = re.compile(r"^\[(WARNING|CRITICAL)\] (\S+) (\S+): (.*)$")
    for line in result.stdout.splitlines():
        match = line_format.match(line)
        if match:
            level, name, kind, message = match.groups()
            resource = f"{kind.rsplit('/', 1)[-1]}/{name.split('/', 1)[0]}"
            findings.append(Finding(source, f"kube-score:{level.lower()}", resource, message))
    if result.returncode != 0 and not findings:
        raise ManifestError(f"kube-score failed: {result.stderr.strip() or result.stdout}")
    return findings


# --- staging vs prod -------------------------------------------------------------------------


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list) and node:
        for index, value in enumerate(node):
            yield from _flatten(value, f"{prefix}.{index}")
    else:
        yield prefix, node


def _normalise(resources: Sequence[Resource]) -> dict[str, dict[str, Any]]:
    """`Kind/name` -> flattened fields, with kustomize's generated hash suffixes removed
    (they follow the ConfigMap content, whose differences are compared key by key)."""
    generated = {
        r["metadata"]["name"]: _GENERATED_SUFFIX.sub("", r["metadata"]["name"])
        for r in resources
        if r.get("kind") in {"ConfigMap", "Secret"}
        and _GENERATED_SUFFIX.search(r["metadata"]["name"])
    }
    text = json.dumps(resources)
    for hashed, plain in generated.items():
        text = text.replace(f'"{hashed}"', f'"{plain}"')
    out: dict[str, dict[str, Any]] = {}
    for resource in json.loads(text):
        key = ref(resource) if resource.get("kind") != "Namespace" else "Namespace/*"
        out[key] = dict(_flatten(resource))
    return out


def check_environment_diff(
    first: Sequence[Resource], second: Sequence[Resource], source: str = "staging vs prod"
) -> list[Finding]:
    """Differences between two environments outside ENVIRONMENT_DIFF_ALLOWED."""
    a, b = _normalise(first), _normalise(second)
    findings: list[Finding] = []
    for key in sorted(a.keys() ^ b.keys()):
        where = "staging" if key in a else "prod"
        findings.append(
            Finding(
                source,
                "environment-diff",
                key,
                f"only in {where}; both environments must render the same objects",
            )
        )
    for key in sorted(a.keys() & b.keys()):
        fields_a, fields_b = a[key], b[key]
        for path in sorted(fields_a.keys() | fields_b.keys()):
            if fields_a.get(path) == fields_b.get(path):
                continue
            if any(
                fnmatch.fnmatchcase(f"{key}:{path}", allowed)
                for allowed in ENVIRONMENT_DIFF_ALLOWED
            ):
                continue
            findings.append(
                Finding(
                    source,
                    "environment-diff",
                    key,
                    f"{path} differs ({fields_a.get(path)!r} vs {fields_b.get(path)!r}) and is "
                    "not an intended difference; patch it in both overlays or, if intended, add "
                    "it to ENVIRONMENT_DIFF_ALLOWED and docs/environments.md",
                )
            )
    return findings


# --- the entry point -------------------------------------------------------------------------


def validate_all(
    tools: Toolchain,
    overlays: Sequence[Path],
    *,
    argocd: Path | None,
    compare: tuple[Path, Path] | None,
    cluster: Path | None = None,
    versions: Sequence[str],
    out: Path,
    scanners: bool = True,
    rules: Callable[[Path], Rules] | None = None,
) -> Report:
    """Render and check everything; collect every finding instead of stopping at the first.

    `rules` picks how each overlay is rendered and which policies apply (default: the service's,
    `Rules()`); `validate` passes gitops.commands.validate.train's for k8s-train/. Schemas and
    scanners are the same for all."""

    def policies_for(overlay: Path) -> Mapping[str, Policy]:
        return (rules(overlay) if rules else Rules()).policies

    report = Report()
    out.mkdir(parents=True, exist_ok=True)
    rendered: dict[Path, str] = {}  # rendered file -> source (the kustomization)
    parsed: dict[Path, list[Resource]] = {}
    for overlay in overlays:
        source = display(overlay)
        print(f">> {source}: kustomize build", flush=True)
        try:
            text = (rules(overlay) if rules else Rules()).render(tools.kustomize, overlay)
        except ManifestError as error:
            report.findings.append(Finding(source, "kustomize", "-", str(error)))
            continue
        target = out / (source.replace("/", "_").strip("._") + ".yaml")
        target.write_text(text)
        rendered[target] = source
        parsed[overlay] = parse(text)

    print(f">> kubeconform -strict x {len(versions)} Kubernetes versions, policies", flush=True)
    report.findings += check_schemas(tools, rendered, versions)
    for overlay, resources in parsed.items():
        report.findings += check_policies(display(overlay), resources, policies_for(overlay))
    if scanners and rendered:
        print(f">> kube-score and checkov over {len(rendered)} rendered overlays", flush=True)
        for target, source in rendered.items():
            report.findings += check_kube_score(tools, source, target)
        report.findings += check_checkov(tools, rendered)
    failed_sources = {finding.source for finding in report.findings}
    for overlay, resources in parsed.items():
        if display(overlay) not in failed_sources:
            report.checked.append(
                f"{display(overlay)}: {len(resources)} objects, valid for Kubernetes "
                f"{', '.join(versions)}; policies: {', '.join(policies_for(overlay))}"
                + ("; checkov and kube-score clean" if scanners else "")
            )
    if scanners and rendered:
        report.checked.append(
            "skipped scanner checks (reasons in gitops/commands/validate/manifests.py): checkov "
            f"{', '.join(CHECKOV_SKIPS)}; kube-score {', '.join(KUBE_SCORE_SKIPS)}"
        )

    # Kustomizations of custom resources: schema-checked against their CRDs (no pods to scan).
    crd_sources = [(argocd, "argocd.yaml", "Argo CD"), (cluster, "cluster.yaml", "Kyverno")]
    for directory, file_name, crds in crd_sources:
        if directory is None:
            continue
        source = display(directory)
        print(f">> {source}: kustomize build, kubeconform against the {crds} CRDs", flush=True)
        try:
            text = render(tools.kustomize, directory)
            target = out / file_name
            target.write_text(text)
            found = check_schemas(tools, {target: source}, versions[-1:])
            report.findings += found
            if not found:
                report.checked.append(
                    f"{source}: {len(parse(text))} objects valid against the {crds} CRDs"
                )
        except ManifestError as error:
            report.findings.append(Finding(source, "kustomize", "-", str(error)))

    if compare is not None:
        first, second = compare
        label = f"{display(first)} vs {display(second)}"
        print(f">> comparing {label}", flush=True)
        try:
            a = parsed.get(first) or parse(render(tools.kustomize, first))
            b = parsed.get(second) or parse(render(tools.kustomize, second))
        except ManifestError as error:
            report.findings.append(Finding(label, "kustomize", "-", str(error)))
        else:
            found = check_environment_diff(a, b, label)
            report.findings += found
            if not found:
                report.checked.append(f"{label}: differ only at the allowed paths")
    return report


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
