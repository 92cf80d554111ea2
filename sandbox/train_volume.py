"""The training Job's storage in the sandbox's live mode: a static PersistentVolume.

The sandbox has no dynamic provisioner, so the claim of k8s-train/base/pvc.yaml
(`elpv-train/elpv-train-data`, no storage class) would stay Pending. `sandbox.py up --live`
calls `create` once the node is Ready: a `local` PersistentVolume on a directory of the node's
state (so `down` removes it with the rest), pre-bound to that claim, owned by the training
image's user (10001). On a real cluster the default StorageClass provisions the claim instead.

    python sandbox/train_volume.py   # the volume's directory (for a test or a look inside)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PV_NAME = "elpv-train-data-sandbox"
CLAIM_NAMESPACE = "elpv-train"
CLAIM_NAME = "elpv-train-data"
# What the sandbox overlay's claim asks for (k8s-train/overlays/sandbox/claim-size.yaml) or more.
CAPACITY = "2Gi"
# The training image's user and group (docker/train.Dockerfile, k8s-train/base/job.yaml).
OWNER = 10001
STATE = Path(
    os.environ.get(
        "SANDBOX_STATE", Path(__file__).resolve().parent.parent / ".tools" / "sandbox" / "state"
    )
)


def volume_dir(state: Path = STATE) -> Path:
    """Where the volume's data lives on the host: below the node's state, removed by `down`."""
    return state / "node" / "train-volume"


def persistent_volume(path: Path, node: str) -> dict[str, object]:
    """A `local` PersistentVolume on `path` of `node`, reserved for the training claim."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": PV_NAME,
            "labels": {
                "app.kubernetes.io/name": "elpv-train",
                "app.kubernetes.io/part-of": "sandbox",
            },
        },
        "spec": {
            "capacity": {"storage": CAPACITY},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            # Pre-bound: no other claim can take it, and it waits for this one.
            "claimRef": {"namespace": CLAIM_NAMESPACE, "name": CLAIM_NAME},
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


def create(kubectl: Path, kubeconfig: Path, node: str, state: Path = STATE) -> Path:
    """Make the directory (owned by the training user) and the PersistentVolume; return the path."""
    path = volume_dir(state)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, OWNER, OWNER)
    path.chmod(0o775)
    proc = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
        input=json.dumps(persistent_volume(path, node)),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"creating the PersistentVolume {PV_NAME} failed: {proc.stderr}")
    return path


if __name__ == "__main__":
    print(volume_dir())
    sys.exit(0)
