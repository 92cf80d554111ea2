# Pinned versions of the sandbox tools (sourced by build.sh and mk/sandbox.mk).
# Changing one here changes the cache key (binary name) and needs the wrapper go.mod updated.
K8S_VERSION=v1.36.3
K8S_MAJOR=1
K8S_MINOR=36
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
ARGOCD_VERSION=v3.5.3
# The real node (live mode, docs/sandbox.md): containerd 2.3 is the line that lists Kubernetes
# 1.36 as supported and still runs on cgroup v1; runc is the version containerd 2.3.7 tests with.
CONTAINERD_VERSION=v2.3.7
RUNC_VERSION=v1.5.2
# Live mode's Ingress controller (docs/sandbox.md): v3.6.12, the newest Traefik that builds from
# the module proxy alone (v3.7 replaces a nested module the proxy does not serve).
TRAEFIK_VERSION=v3.6.12
# metrics-server (the HPA's CPU metrics, installed by Argo CD from its upstream chart) and helm
# (rendered by Argo CD's repo-server): helm is the version Argo CD 3.5.3 is tested with.
METRICS_SERVER_VERSION=v0.8.0
HELM_VERSION=v4.2.1
# The admission demonstration (docs/environments.md, "Signed images only"): Kyverno's admission
# controller, the version whose CRDs `make validate` checks the policy against, and cosign v3.1.2,
# the version Kyverno v1.19.1's go.mod requires (one wrapper module builds both).
KYVERNO_VERSION=v1.19.1
COSIGN_VERSION=v3.1.2
