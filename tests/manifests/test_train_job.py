"""The training Job's manifests (k8s-train/): what `gitops validate` checks, and that each of its
Job policies fails on a Job broken on purpose. The live run is tests/e2e/test_live_train_job.py."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops.commands.validate import manifests, train
from gitops.commands.validate.schemas import SUPPORTED_KUBERNETES_VERSIONS

from .conftest import ROOT, only

Resources = list[dict[str, Any]]


@pytest.fixture(scope="module")
def train_rendered(tools: manifests.Toolchain) -> dict[str, Resources]:
    """kustomization (relative to k8s-train) -> the objects validation renders for it."""
    return {
        str(path.relative_to(train.TRAIN_ROOT)): manifests.parse(
            train.render_train(tools.kustomize, path)
        )
        for path in train.train_kustomizations()
    }


def pod_spec(resources: Resources) -> dict[str, Any]:
    spec: dict[str, Any] = only(resources, "Job")["spec"]["template"]["spec"]
    return spec


def test_validation_covers_base_and_every_overlay() -> None:
    found = [str(p.relative_to(ROOT)) for p in train.train_kustomizations()]
    assert found == ["k8s-train/base", "k8s-train/overlays/gpu", "k8s-train/overlays/sandbox"]


def test_every_train_kustomization_passes_schemas_and_its_policies(
    tools: manifests.Toolchain, tmp_path: Path
) -> None:
    report = manifests.validate_all(
        tools,
        train.train_kustomizations(),
        argocd=None,
        compare=None,
        versions=SUPPORTED_KUBERNETES_VERSIONS,
        out=tmp_path,
        scanners=False,  # checkov and kube-score run in `make validate`
        rules=train.rules_for,
    )
    assert report.ok, "\n".join(str(f) for f in report.findings)
    assert len(report.checked) == 3
    assert all("train-job-bounded" in line for line in report.checked)


def test_the_service_rules_would_reject_the_job(tools: manifests.Toolchain, tmp_path: Path) -> None:
    """Why the Job has rules of its own: a PVC and no Service/PDB fail the service's policies."""
    report = manifests.validate_all(
        tools,
        [train.TRAIN_ROOT / "base"],
        argocd=None,
        compare=None,
        versions=SUPPORTED_KUBERNETES_VERSIONS[-1:],
        out=tmp_path,
        scanners=False,
        rules=lambda _: manifests.Rules(render=train.render_train),
    )
    checks = {f.check for f in report.findings}
    assert {"policy:volume-types", "policy:selectors-match-pods"} <= checks


def test_the_job_runs_restricted_with_only_its_volumes_writable(
    train_rendered: dict[str, Resources],
) -> None:
    spec = pod_spec(train_rendered["base"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["fsGroup"] == 10001
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/data", "/tmp", "/etc/elpv-train"}
    assert mounts["/etc/elpv-train"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "elpv-train-data"
    assert "emptyDir" in volumes["tmp"]
    ns = only(train_rendered["base"], "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_requests_and_limits_are_set_and_the_sandbox_asks_for_less(
    train_rendered: dict[str, Resources],
) -> None:
    def resources(key: str) -> dict[str, Any]:
        (container,) = pod_spec(train_rendered[key])["containers"]
        res: dict[str, Any] = container["resources"]
        return res

    for key in train_rendered:
        res = resources(key)
        for kind in ("cpu", "memory", "ephemeral-storage"):
            assert kind in res["requests"], (key, kind)
            assert kind in res["limits"], (key, kind)
    base_cpu = resources("base")["requests"]["cpu"]
    assert resources("overlays/sandbox")["requests"]["cpu"] != base_cpu
    claims = [r for r in train_rendered["overlays/sandbox"] if r["kind"] == "PersistentVolumeClaim"]
    assert {c["metadata"]["name"] for c in claims} == {"elpv-train-data", "elpv-dvc-remote"}
    for claim in claims:
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert "storageClassName" not in claim["spec"], "the default StorageClass provisions it"


def test_the_gpu_overlay_selects_gpu_nodes_and_the_base_does_not(
    train_rendered: dict[str, Resources],
) -> None:
    gpu = pod_spec(train_rendered["overlays/gpu"])
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "tolerations"
    ]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    base = pod_spec(train_rendered["base"])
    assert "nodeSelector" not in base
    assert "nvidia.com/gpu" not in base["containers"][0]["resources"]["limits"]


def test_the_sandbox_overlay_mounts_its_tiny_params(train_rendered: dict[str, Resources]) -> None:
    resources = train_rendered["overlays/sandbox"]
    config = only(resources, "ConfigMap")
    override = yaml.safe_load(config["data"]["params-override.yaml"])
    assert override["train"]["epochs"] == 1
    assert override["base"]["data_dir"].startswith("/data/")  # on the claim
    volumes = {v["name"]: v for v in pod_spec(resources)["volumes"]}
    # The generated (hashed) name, in the Job's namespace.
    assert volumes["params"]["configMap"]["name"] == config["metadata"]["name"]
    assert config["metadata"]["namespace"] == only(resources, "Job")["metadata"]["namespace"]
    # The override only names keys params.yaml has (a typo would be silently ignored).
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for section, values in override.items():
        assert set(values) <= set(params[section]), section


# --- each Job policy fails on a Job broken on purpose ------------------------------------------


def broken(resources: Resources, change: Any) -> Resources:
    changed = copy.deepcopy(resources)
    change(changed)
    return changed


def job_of(resources: Resources) -> dict[str, Any]:
    return only(resources, "Job")


def set_image(resources: Resources) -> None:
    job_of(resources)["spec"]["template"]["spec"]["containers"][0]["image"] = "elpv-train:latest"


def drop_deadline(resources: Resources) -> None:
    del job_of(resources)["spec"]["activeDeadlineSeconds"]


def retry_on_failure(resources: Resources) -> None:
    job_of(resources)["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"


def host_path(resources: Resources) -> None:
    job_of(resources)["spec"]["template"]["spec"]["volumes"].append(
        {"name": "host", "hostPath": {"path": "/var/lib/data"}}
    )


def drop_claim(resources: Resources) -> None:
    resources.remove(only(resources, "PersistentVolumeClaim"))


def unrestricted(resources: Resources) -> None:
    del only(resources, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]


@pytest.mark.parametrize(
    ("change", "policy", "phrase"),
    [
        (set_image, "train-image-per-run", "is set in git"),
        (drop_deadline, "train-job-bounded", "spec.activeDeadlineSeconds is not set"),
        (retry_on_failure, "train-job-bounded", "restartPolicy is 'OnFailure'"),
        (host_path, "train-volumes", "is of type hostPath"),
        (drop_claim, "train-volumes", "which this output does not declare"),
        (unrestricted, "train-namespace-restricted", "enforce=restricted"),
    ],
)
def test_job_policy_fails_with_its_message(
    train_rendered: dict[str, Resources], change: Any, policy: str, phrase: str
) -> None:
    good = train_rendered["base"]
    assert train.TRAIN_POLICIES[policy](good) == []
    problems = train.TRAIN_POLICIES[policy](broken(good, change))
    assert any(phrase in p for p in problems), problems


# --- make train-job refuses bad input before it touches a cluster ---------------------------


@pytest.mark.parametrize(
    ("overlay", "image", "phrase"),
    [
        ("k8s-train/base", "ghcr.io/x/elpv-train:abc", "is not NAME:TAG@sha256:<digest>"),
        ("overlays/staging", f"r/elpv-train:t@sha256:{'0' * 64}", "is not inside k8s-train/"),
        ("k8s-train/nope", f"r/elpv-train:t@sha256:{'0' * 64}", "no such directory"),
    ],
)
def test_run_job_refuses_bad_input(overlay: str, image: str, phrase: str) -> None:
    proc = subprocess.run(
        [str(ROOT / "k8s-train" / "run-job.sh"), overlay, image],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "KUBECTL": "/bin/false"},
    )
    assert proc.returncode == 2
    assert phrase in proc.stderr


def test_the_sandbox_hands_the_model_back_through_a_shared_remote_and_the_base_does_not(
    train_rendered: dict[str, Resources],
) -> None:
    """components/shared-dvc-remote: a ReadWriteMany claim at /remote, the Job's DVC remote."""
    resources = train_rendered["overlays/sandbox"]
    container = pod_spec(resources)["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DVC_REMOTE_URL"] == "/remote"
    assert env["DVC_PUSH"] == "true"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["dvc-remote"] == env["DVC_REMOTE_URL"]
    volumes = {v["name"]: v for v in pod_spec(resources)["volumes"]}
    claim_name = volumes["dvc-remote"]["persistentVolumeClaim"]["claimName"]
    claims = {c["metadata"]["name"]: c for c in resources if c["kind"] == "PersistentVolumeClaim"}
    assert claims[claim_name]["spec"]["accessModes"] == ["ReadWriteMany"]
    base_env = {e["name"] for e in pod_spec(train_rendered["base"])["containers"][0]["env"]}
    assert not base_env & {"DVC_REMOTE_URL", "DVC_PUSH"}


# --- make train-pull refuses what is not a run's lock, before it touches the workspace ------

GOOD_LOCK = "stages:\n  train:\n    outs:\n    - path: models/model.keras\n      md5: 0\n"


@pytest.mark.parametrize(
    ("lock_text", "with_metrics", "workspace_has_dvc_yaml", "phrase"),
    [
        (None, True, True, "is missing or empty"),
        ("stages:\n  prepare: {}\n", True, True, "is not a dvc.lock with a train stage"),
        ("[1, 2]\n", True, True, "is not a dvc.lock with a train stage"),
        (GOOD_LOCK, True, False, "has no dvc.yaml"),
        (GOOD_LOCK, False, True, "metrics/train.json is missing"),
    ],
)
def test_train_pull_refuses_bad_input(
    tmp_path: Path,
    lock_text: str | None,
    with_metrics: bool,
    workspace_has_dvc_yaml: bool,
    phrase: str,
) -> None:
    handback = tmp_path / "handback"
    (handback / "metrics").mkdir(parents=True)
    if lock_text is not None:
        (handback / "dvc.lock").write_text(lock_text, encoding="utf-8")
    if with_metrics:
        (handback / "metrics" / "train.json").write_text("{}", encoding="utf-8")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    if workspace_has_dvc_yaml:
        (workspace / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    proc = subprocess.run(
        [str(ROOT / "k8s-train" / "pull-model.sh"), str(handback), str(workspace)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin", "DVC": "/bin/false"},
    )
    assert proc.returncode == 2, proc.stderr
    assert phrase in proc.stderr
    assert list(workspace.iterdir()) == ([workspace / "dvc.yaml"] if workspace_has_dvc_yaml else [])
