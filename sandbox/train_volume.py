"""The training Job's storage in the sandbox's live mode: static PersistentVolumes.

The sandbox has no dynamic provisioner, so the Job's claims would stay Pending:
`elpv-train/elpv-train-data` (k8s-train/base/pvc.yaml: DVC cache and workspaces) and
`elpv-train/elpv-dvc-remote` (k8s-train/components/shared-dvc-remote: the DVC remote the model
is handed back through). `sandbox.py up --live` calls `create` once the node is Ready: one
`local` PersistentVolume per claim on a directory of the node's state (so `down` removes them
with the rest), pre-bound to it, owned by the training image's user (10001). On a real cluster
a StorageClass provisions the claims instead (an NFS-backed one for the shared remote).

    python sandbox/train_volume.py   # the volumes' directories (for a test or a look inside)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLAIM_NAMESPACE = "elpv-train"
# claim -> (PersistentVolume, directory under the node's state, access mode)
VOLUMES = {
    "elpv-train-data": ("elpv-train-data-sandbox", "train-volume", "ReadWriteOnce"),
    "elpv-dvc-remote": ("elpv-dvc-remote-sandbox", "dvc-remote", "ReadWriteMany"),
}
# What the sandbox overlay's claims ask for (k8s-train/overlays/sandbox/claim-size.yaml) or more.
CAPACITY = "2Gi"
# The training image's user and group (docker/train.Dockerfile, k8s-train/base/job.yaml).
OWNER = 10001
STATE = Path(
    os.environ.get(
        "SANDBOX_STATE", Path(__file__).resolve().parent.parent / ".tools" / "sandbox" / "state"
    )
)


def volume_dir(claim: str = "elpv-train-data", state: Path = STATE) -> Path:
    """Where a claim's data lives on the host: below the node's state, removed by `down`."""
    return state / "node" / VOLUMES[claim][1]


def persistent_volume(claim: str, path: Path, node: str) -> dict[str, object]:
    """A `local` PersistentVolume on `path` of `node`, reserved for `claim`."""
    name, _, access_mode = VOLUMES[claim]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/name": "elpv-train",
                "app.kubernetes.io/part-of": "sandbox",
            },
        },
        "spec": {
            "capacity": {"storage": CAPACITY},
            "accessModes": [access_mode],
            "volumeMode": "Filesystem",
            # Pre-bound: no other claim can take it, and it waits for this one.
            "claimRef": {"namespace": CLAIM_NAMESPACE, "name": claim},
            # The claim has no class and the sandbox no default StorageClass: class "" matches.
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def create(kubectl: Path, kubeconfig: Path, node: str, state: Path = STATE) -> dict[str, Path]:
    """Make each claim's directory (owned by the training user) and PersistentVolume."""
    paths = {}
    for claim in VOLUMES:
        path = paths[claim] = volume_dir(claim, state)
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, OWNER, OWNER)
        path.chmod(0o775)
        proc = subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
            input=json.dumps(persistent_volume(claim, path, node)),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"creating the PersistentVolume for {claim} failed: {proc.stderr}")
    return paths


if __name__ == "__main__":
    for claim in VOLUMES:
        print(f"{claim}: {volume_dir(claim)}")
    sys.exit(0)
