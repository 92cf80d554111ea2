"""Fast checks of sandbox/addons.py (default suite, no sandbox, no root needed).

The live HPA test proves the whole chain; these pin the parts that are easy to get subtly
wrong: the firewall order that keeps the API server closed to other hosts, the flags the
aggregation layer needs, and the sandbox's metrics-server values.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def addons() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "addons_under_test", ROOT / "sandbox" / "addons.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_firewall_lets_only_loopback_and_the_bridge_in(addons: ModuleType) -> None:
    rules = addons.firewall_rules(6443)
    # Each rule is inserted at the top (-I): the later ACCEPT ends above the DROP.
    assert rules[0] == ["iptables", "INPUT", "!", "-i", "lo", "-p", "tcp", "--dport", "6443",
                        "-j", "DROP"]  # fmt: skip
    assert rules[1] == ["iptables", "INPUT", "-i", "elpv-br0", "-p", "tcp", "--dport", "6443",
                        "-j", "ACCEPT"]  # fmt: skip
    # Go's wildcard listener is dual-stack: IPv6 gets the DROP too, and no ACCEPT.
    assert [r for r in rules if r[0] == "ip6tables"] == [["ip6tables", *rules[0][1:]]]


def test_control_plane_opens_the_api_server_to_pods_and_the_aggregator(
    addons: ModuleType, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="firewalls"):
        addons.control_plane({}, {}, tmp_path / "pki", run_dir)
    run_dir.mkdir()
    (run_dir / "apiserver-port").write_text("40123")
    options: dict[str, object] = {}
    config: dict[str, Any] = {
        "componentsPatches": [
            {"name": "kube-apiserver", "extraArgs": [{"key": "kubelet-client-key", "value": "k"}]}
        ]
    }
    port = addons.control_plane(options, config, tmp_path / "pki", run_dir)
    # The API server listens on the very port the firewall was opened for.
    assert port == 40123
    assert options["kubeApiserverPort"] == port
    assert options["kubeApiserverCertSANs"] == ["10.244.0.1", "10.0.0.1"]
    patches = {p["name"]: p["extraArgs"] for p in config["componentsPatches"]}
    args = {a["key"]: a for a in patches["kube-apiserver"]}
    assert "kubelet-client-key" in args  # the existing patch is kept
    assert args["bind-address"] == {"key": "bind-address", "value": "0.0.0.0", "override": True}  # noqa: S104
    assert args["advertise-address"]["value"] == "10.244.0.1"
    assert args["requestheader-client-ca-file"]["value"] == str(tmp_path / "pki" / "ca.crt")
    assert args["requestheader-allowed-names"]["value"] == "kwok-admin"
    assert args["enable-aggregator-routing"]["value"] == "true"
    assert patches["kube-controller-manager"] == [
        {"key": "horizontal-pod-autoscaler-sync-period", "value": "5s"}
    ]


def test_sandbox_values_name_the_local_image_by_digest(addons: ModuleType, tmp_path: Path) -> None:
    binary = tmp_path / "metrics-server-v0.8.0"
    binary.write_bytes(b"\x7fELF")
    pushed: list[tuple[str, Path, str]] = []

    def push(ref: str, path: Path, target: str) -> str:
        pushed.append((ref, path, target))
        return "sha256:" + "ab" * 32

    repository, tag = addons.metrics_server_image(push, tmp_path, "127.0.0.1:5000", ROOT)
    assert pushed == [("127.0.0.1:5000/elpv-sandbox/metrics-server:v0.8.0", binary,
                       "/metrics-server")]  # fmt: skip
    assert tag == "v0.8.0@sha256:" + "ab" * 32
    values = addons.sandbox_patch(repository, tag)["spec"]["source"]["helm"]["valuesObject"]
    assert values["image"] == {"repository": "127.0.0.1:5000/elpv-sandbox/metrics-server",
                               "tag": tag}  # fmt: skip
    assert values["args"] == ["--kubelet-insecure-tls"]
    json.dumps(values)  # written into the seed commit as JSON


def test_missing_metrics_server_binary_says_how_to_build_it(
    addons: ModuleType, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match=r"sandbox/tools/build.sh metrics-server"):
        addons.metrics_server_image(lambda *a: "", tmp_path, "127.0.0.1:5000", ROOT)
