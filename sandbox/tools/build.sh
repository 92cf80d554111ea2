#!/usr/bin/env bash
# Build one pinned sandbox binary from the Go module proxy into $SANDBOX_BIN, measuring it.
#
#   sandbox/tools/build.sh <binary>      e.g. kube-apiserver, etcd, kwok, argocd
#
# Each binary is built from the committed wrapper module under sandbox/tools/<module>/ (go.mod +
# go.sum pin every dependency), so a rebuild on another machine compiles the same sources.
# The output is <binary>-<version>; an existing file is reused (the cache key is the version).
# `/usr/bin/time -v` of every build is kept in $SANDBOX_BIN/../build-logs/<binary>.time so the
# cold build cost can be reported (docs/sandbox.md, bench/sandbox.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
: "${SANDBOX_BIN:=$root/.tools/sandbox/bin}"
: "${GOPATH:=$root/.tools/go}"
: "${GOMODCACHE:=$GOPATH/pkg/mod}"
: "${GOCACHE:=$GOPATH/cache}"
: "${NICE:=nice -n 15}"
export GOPATH GOMODCACHE GOCACHE
# The committed go.sum is the source of truth: never let a build rewrite the wrapper modules.
# No DWARF: the binaries are stripped (-s -w) anyway; not generating it saves compile CPU
# (docs/sandbox.md, "Build cost of the live node's tools").
export GOFLAGS="-mod=readonly -trimpath -gcflags=all=-dwarf=false"
export CGO_ENABLED=0
# Builds share 2 cores with everything else: one package at a time keeps peak memory bounded.
: "${GO_BUILD_P:=2}"

# shellcheck source=sandbox/tools/versions.sh
source "$here/versions.sh"

usage() {
	echo "usage: $0 <kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy|etcd|kwok|kwokctl|argocd|containerd|containerd-shim-runc-v2|ctr|runc|pause|traefik|helm|metrics-server|kyverno|cosign>" >&2
	exit 2
}
[[ $# -eq 1 ]] || usage
bin="$1"

k8s_ldflags() {
	local pkg flags=""
	for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
		flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR"
		flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	echo "-s -w$flags"
}

case "$bin" in
kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
	module=kubernetes version=$K8S_VERSION pkg=k8s.io/kubernetes/cmd/$bin ldflags="$(k8s_ldflags)"
	;;
etcd)
	module=etcd version=$ETCD_VERSION pkg=go.etcd.io/etcd/server/v3
	ldflags="-s -w"
	;;
kwok | kwokctl)
	module=kwok version=$KWOK_VERSION pkg=sigs.k8s.io/kwok/cmd/$bin
	ldflags="-s -w"
	;;
containerd | containerd-shim-runc-v2 | ctr)
	module=containerd version=$CONTAINERD_VERSION pkg=github.com/containerd/containerd/v2/cmd/$bin
	ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
	# Static, no cgo (what containerd's release builds of the shim do; btrfs needs cgo: left out).
	tags="urfave_cli_no_docs osusergo netgo static_build"
	[[ $bin == containerd-shim-runc-v2 ]] && tags+=" no_grpc"
	;;
runc)
	# runc's nsenter is C and the RuntimeDefault seccomp profile needs libseccomp (Debian
	# libseccomp-dev at build time, libseccomp2 at run time); libpathrs (Rust) is left out.
	module=runc version=$RUNC_VERSION pkg=github.com/opencontainers/runc
	ldflags="-s -w"
	tags="seccomp urfave_cli_no_docs"
	export CGO_ENABLED=1
	;;
pause)
	# Kubernetes' pod infra ("pause") program, from the pinned module's build/pause/linux/pause.c,
	# compiled statically with the host's gcc (Debian libc6-dev ships libc.a).
	module=kubernetes version=$K8S_VERSION
	;;
traefik)
	# Traefik's web UI assets are not in the module (webui/static holds a placeholder): the
	# dashboard is empty, which the sandbox does not use.
	module=traefik version=$TRAEFIK_VERSION pkg=github.com/traefik/traefik/v3/cmd/traefik
	ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
	;;
helm)
	# What Argo CD's repo-server execs to render Helm sources (it looks `helm` up on PATH).
	module=helm version=$HELM_VERSION pkg=helm.sh/helm/v4/cmd/helm
	ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
	ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
	;;
metrics-server)
	# Static, no cgo (upstream's Makefile); its image is packed by sandbox/addons.py.
	module=metrics-server version=$METRICS_SERVER_VERSION pkg=sigs.k8s.io/metrics-server/cmd/metrics-server
	ldflags="-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
	ldflags+=" -X k8s.io/client-go/pkg/version.buildDate=1970-01-01T00:00:00Z"
	;;
kyverno)
	# Kyverno's admission controller (not the `kyverno` CLI, which only evaluates files).
	module=kyverno version=$KYVERNO_VERSION pkg=github.com/kyverno/kyverno/cmd/kyverno
	ldflags="-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$KYVERNO_VERSION"
	;;
cosign)
	# From the same wrapper module as kyverno (one module graph, one build cache).
	module=kyverno version=$COSIGN_VERSION pkg=github.com/sigstore/cosign/v3/cmd/cosign
	ldflags="-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION"
	ldflags+=" -X sigs.k8s.io/release-utils/version.gitTreeState=clean"
	;;
argocd)
	module=argocd version=$ARGOCD_VERSION pkg=github.com/argoproj/argo-cd/v3/cmd
	ldflags="-s -w -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD_VERSION#v}"
	ldflags+=" -X github.com/argoproj/argo-cd/v3/common.gitTreeState=clean"
	ldflags+=" -X github.com/argoproj/argo-cd/v3/common.kubectlVersion=$K8S_VERSION"
	;;
*) usage ;;
esac

out="$SANDBOX_BIN/$bin-$version"
logs="$SANDBOX_BIN/../build-logs"
mkdir -p "$SANDBOX_BIN" "$logs"
# One build per binary at a time: a second caller (.ci/run's background build, and `make test`
# reaching the same binary) waits for the first and then finds it cached.
exec 9>"$SANDBOX_BIN/.$bin-$version.lock"
flock 9
if [[ -x "$out" ]]; then
	echo ">> $bin $version: cached at $out"
else
	echo ">> building $bin $version from the Go module proxy (cold: minutes; see docs/sandbox.md)"
	cd "$here/$module"
	start=$(date +%s)
	if [[ $bin == pause ]]; then
		src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
		/usr/bin/time -v -o "$logs/$bin.time" \
			gcc -Os -static -Wall -DVERSION="$version" -o "$out.tmp.$$" "$src"
		strip "$out.tmp.$$"
	else
		# shellcheck disable=SC2086  # NICE is a command prefix on purpose
		$NICE /usr/bin/time -v -o "$logs/$bin.time" \
			go build -p "$GO_BUILD_P" -tags "${tags:-}" -ldflags "$ldflags" -o "$out.tmp.$$" "$pkg"
	fi
	mv "$out.tmp.$$" "$out"
	echo "wall_seconds: $(($(date +%s) - start))" >>"$logs/$bin.time"
	echo ">> built $out in $(($(date +%s) - start)) s (max RSS $(awk -F': ' '/Maximum resident/ {printf "%d MiB", $2/1024}' "$logs/$bin.time"))"
fi
ln -sf "$(basename "$out")" "$SANDBOX_BIN/$bin"

# Argo CD's CRDs and the git helper scripts its repo-server execs are files of the module, not
# of the binary: keep a copy beside the binary so a cache shared between clones is complete.
if [[ $bin == argocd ]]; then
	files="$SANDBOX_BIN/../argocd-$version-files"
	if [[ ! -d "$files/crds" ]]; then
		dir="$(cd "$here/argocd" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)"
		[[ -n "$dir" && -d "$dir" ]] || dir="$(cd "$here/argocd" && go mod download -json github.com/argoproj/argo-cd/v3 | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
		mkdir -p "$files/hack"
		cp -r "$dir/manifests/crds" "$files/crds"
		cp "$dir"/hack/{git-verify-wrapper.sh,gpg-wrapper.sh,git-ask-pass.sh} "$files/hack/"
		chmod -R u+w,a+r "$files" && chmod a+x "$files"/hack/*.sh
		echo ">> Argo CD CRDs and helper scripts copied to $files"
	fi
fi
