# Local GitOps sandbox: a real Kubernetes control plane (kube-apiserver, etcd, controller-manager,
# scheduler, kwok nodes) and real Argo CD, all as local processes on 127.0.0.1 (docs/sandbox.md).
#
#   make sandbox-tools   build the pinned binaries (cold: tens of minutes on 2 cores; cached)
#   make sandbox-up      start everything and bootstrap Argo CD from the local `origin`
#   make sandbox-down    stop every process the sandbox started
#   make e2e             tools + up + the end-to-end scenarios + down (always down)
#
# The binaries are cached by version under $(SANDBOX_BIN), in the per-user cache so that one
# cold build serves every clone; SANDBOX_CACHE=.tools/sandbox keeps it local.

SANDBOX_CACHE ?= $(CACHE_DIR)/sandbox
SANDBOX_BIN   := $(SANDBOX_CACHE)/bin
export SANDBOX_BIN
SANDBOX_PY    := $(BIN)/python sandbox/sandbox.py
include sandbox/tools/versions.sh

SANDBOX_K8S_BINS := kube-apiserver kube-controller-manager kube-scheduler kubectl
SANDBOX_TOOL_FILES := \
	$(foreach b,$(SANDBOX_K8S_BINS),$(SANDBOX_BIN)/$(b)-$(K8S_VERSION)) \
	$(SANDBOX_BIN)/etcd-$(ETCD_VERSION) \
	$(SANDBOX_BIN)/kwok-$(KWOK_VERSION) $(SANDBOX_BIN)/kwokctl-$(KWOK_VERSION) \
	$(SANDBOX_BIN)/argocd-$(ARGOCD_VERSION)

# One rule per binary: build.sh knows the module and flags; the file name carries the version.
$(SANDBOX_BIN)/%:
	sandbox/tools/build.sh $(shell echo '$*' | sed -E 's/-v[0-9]+\.[0-9]+\.[0-9]+$$//')

# Live mode (one real node): containerd, its shim, ctr and runc from the Go module proxy, kubelet
# and kube-proxy from the same Kubernetes module as the control plane.
SANDBOX_NODE_TOOL_FILES := \
	$(SANDBOX_BIN)/kubelet-$(K8S_VERSION) $(SANDBOX_BIN)/kube-proxy-$(K8S_VERSION) \
	$(foreach b,containerd containerd-shim-runc-v2 ctr,$(SANDBOX_BIN)/$(b)-$(CONTAINERD_VERSION)) \
	$(SANDBOX_BIN)/runc-$(RUNC_VERSION) $(SANDBOX_BIN)/pause-$(K8S_VERSION) \
	$(SANDBOX_BIN)/traefik-$(TRAEFIK_VERSION) \
	$(SANDBOX_BIN)/metrics-server-$(METRICS_SERVER_VERSION) $(SANDBOX_BIN)/helm-$(HELM_VERSION)

# Admission (docs/environments.md, "Signed images only"): Kyverno's admission controller and cosign,
# from one wrapper module (sandbox/tools/kyverno/); `make e2e` runs the signature test with them.
SANDBOX_ADMISSION_TOOL_FILES := \
	$(SANDBOX_BIN)/kyverno-$(KYVERNO_VERSION) $(SANDBOX_BIN)/cosign-$(COSIGN_VERSION)

# Every pure-Go binary (runc and pause need Debian build dependencies), in the order `make test`
# needs them (e2e-live, then e2e): what .ci/run compiles in the background while the checks run.
SANDBOX_GO_BINS := $(SANDBOX_K8S_BINS) etcd kwok kwokctl argocd kubelet kube-proxy \
	containerd containerd-shim-runc-v2 ctr traefik metrics-server helm kyverno cosign
.PHONY: sandbox-prefetch
sandbox-prefetch: ## build every pure-Go sandbox binary now (cached; .ci/run starts it early)
	@for b in $(SANDBOX_GO_BINS); do sandbox/tools/build.sh $$b; done

.PHONY: sandbox-admission-tools
sandbox-admission-tools: $(SANDBOX_ADMISSION_TOOL_FILES) ## build Kyverno's admission controller and cosign (cached)
	@for b in kyverno cosign; do sandbox/tools/build.sh $$b >/dev/null; done

.PHONY: sandbox-tools sandbox-deps sandbox-up sandbox-down sandbox-status e2e \
        sandbox-live-tools sandbox-live-deps sandbox-live-up e2e-live e2e-live-run e2e-run bench-hpa

sandbox-tools: $(SANDBOX_TOOL_FILES) ## build the sandbox's Kubernetes, etcd, kwok and Argo CD binaries (cached)
	@for b in $(SANDBOX_K8S_BINS) etcd kwok kwokctl argocd; do sandbox/tools/build.sh $$b >/dev/null; done
	@echo ">> sandbox tools ready in $(SANDBOX_BIN)"

# Redis for Argo CD's cache: Debian's package (as root, like .ci/run).
sandbox-deps:
	@command -v redis-server >/dev/null || { \
	  echo ">> installing redis-server (Debian)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >/dev/null || \
	  { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >/dev/null; }; }

sandbox-live-tools: sandbox-live-deps sandbox-tools $(SANDBOX_NODE_TOOL_FILES) ## + containerd, runc, kubelet, kube-proxy, traefik, metrics-server, helm (cached)
	@for b in kubelet kube-proxy containerd containerd-shim-runc-v2 ctr runc pause traefik metrics-server helm; do sandbox/tools/build.sh $$b >/dev/null; done

# CNI plugins (bridge, host-local) and libseccomp's headers for runc: Debian packages.
sandbox-live-deps: sandbox-deps
	@missing=""; [[ -x /usr/lib/cni/bridge ]] || missing+=" containernetworking-plugins"; \
	  [[ -f /usr/include/seccomp.h ]] || missing+=" libseccomp-dev"; \
	  if [[ -n "$$missing" ]]; then echo ">> installing$$missing (Debian)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null || \
	    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null; }; fi

sandbox-up: setup tools sandbox-tools sandbox-deps ## start the local control plane + Argo CD (127.0.0.1 only)
	$(SANDBOX_PY) up

sandbox-down: ## stop every sandbox process and remove its state
	$(SANDBOX_PY) down

sandbox-status: ## what the sandbox runs and where
	$(SANDBOX_PY) status

# The registry stays up for the whole suite (services.sh run stops what it started): `gitops
# bump` and `promote` check each digest against it. The trap makes sure a failing scenario still
# tears the sandbox down.
e2e: setup tools sandbox-tools sandbox-admission-tools sandbox-deps ## end-to-end GitOps scenarios against the sandbox (up, test, down)
	$(SERVICES) run -- $(MAKE) e2e-run

e2e-run:
	@trap '$(SANDBOX_PY) down' EXIT; \
	  $(SANDBOX_PY) up --admission && \
	  $(BIN)/pytest -m e2e tests/e2e -p no:cacheprovider $(E2E_ARGS)

# Live mode needs the registry for its whole life (containerd pulls the pause and serving images
# from it), so it runs inside `services.sh run`, which stops what it started. The test module
# starts and stops the sandbox itself and checks that `down` leaves the host as it was.
sandbox-live-up: setup tools sandbox-live-tools ## live mode, left running (needs `make services-up` and a pushed test image)
	$(SANDBOX_PY) up --live --image-json $(TEST_IMAGE_JSON)

e2e-live: setup tools sandbox-live-tools ## one real node: the serving image runs, proven by traffic (up, test, down)
	$(SERVICES) run -- $(MAKE) e2e-live-run

# The traffic tests (test_live_traffic.py) deploy a second image, B: the same tiny model with
# another version in its model card (so a new digest and a version the API reports), tagged
# <tag of A>-b. test_live_node.py stops its sandbox before test_live_traffic.py starts its own.
TEST_MODEL_B       := build/test-model-b
TEST_IMAGE_B_JSON  := build/test-image-b.json
LIVE_TESTS := tests/e2e/test_live_node_standalone.py tests/e2e/test_live_node.py \
	tests/e2e/test_live_traffic.py tests/e2e/test_live_hpa.py tests/e2e/test_live_train_job.py
# LIVE_TEST_FILES=... runs a subset (the bench targets do); the 2.2 GB training image is pushed
# only when its test is in the run.
LIVE_RUN_FILES = $(or $(LIVE_TEST_FILES),$(LIVE_TESTS))

$(TEST_MODEL_B)/model_card.json: $(TEST_MODEL)/model.tflite
	rm -rf $(TEST_MODEL_B) && cp -r $(TEST_MODEL) $(TEST_MODEL_B)
	$(BIN)/python -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); \
	  c["version"] += "-b"; json.dump(c, open(p, "w"), indent=2)' $@

e2e-live-run: test-model $(TEST_MODEL_B)/model_card.json
	$(MAKE) push IMAGE_NAME=$(TEST_IMAGE_NAME) MODEL_DIR=$(TEST_MODEL) IMAGE_JSON=$(TEST_IMAGE_JSON)
	$(if $(filter %test_live_train_job.py,$(LIVE_RUN_FILES)),$(MAKE) train-push)
	$(MAKE) push IMAGE_NAME=$(TEST_IMAGE_NAME) MODEL_DIR=$(TEST_MODEL_B) IMAGE_JSON=$(TEST_IMAGE_B_JSON) \
	  IMAGE_TAG=$(IMAGE_TAG)-b
	ELPV_IMAGE_JSON=$(TEST_IMAGE_JSON) ELPV_TRAIN_IMAGE_JSON=$(TRAIN_IMAGE_JSON) ELPV_IMAGE_B_JSON=$(TEST_IMAGE_B_JSON) \
	  ELPV_MODEL_B_CARD=$(TEST_MODEL_B)/model_card.json \
	  $(BIN)/pytest -m live $(LIVE_RUN_FILES) -p no:cacheprovider $(E2E_ARGS)

# Part of `make test` (and so of CI): the GitOps loop is the product; validating files is not proof.
# The live node proves what kwok cannot: the image starts restricted and the probes gate traffic.
# e2e-live runs first: it mostly waits on pods, and meanwhile .ci/run's background build
# (sandbox-prefetch) compiles Kyverno and cosign, which only e2e needs.
TEST_TARGETS += e2e-live e2e

# The figures of test_live_traffic.py (build/sandbox-traffic.json) -> docs/benchmarks.md.
bench-live-traffic: ## push -> answer, rollout and rollback under load through the Ingress -> docs/benchmarks.md
	$(MAKE) e2e-live LIVE_TEST_FILES=tests/e2e/test_live_traffic.py
	$(BIN)/python -m bench.live_traffic

# The timeline of test_live_hpa.py (build/hpa-live.json) -> docs/benchmarks.md + docs/img/hpa-live.png.
bench-hpa: ## HPA scale-up and down on real CPU through the Ingress -> docs/benchmarks.md
	$(MAKE) e2e-live LIVE_TEST_FILES=tests/e2e/test_live_hpa.py
	$(BIN)/python -m bench.hpa
.PHONY: bench-live-traffic

bench-sandbox: e2e ## sandbox benchmark (scenario sync times, warm start, cold builds) -> docs/benchmarks.md
	$(BIN)/python -m bench.sandbox
.PHONY: bench-sandbox

# What a fresh machine pays for `.ci/run`: a clean clone of HEAD with empty per-user caches (uv,
# pip, Go modules and build cache, the sandbox binaries) and a new debootstrap base image name.
# Debian packages installed earlier stay installed (they cost ~1-2 min more on a new machine).
# `env -i`: this make exports its own GOPATH, GOCACHE, SANDBOX_BIN, ... (the warm caches), and
# the clone's make keeps inherited values (`?=`); only HOME and the login PATH pass through.
bench-ci-cold: ## time .ci/run from a clean clone with empty caches (slow: about an hour) -> stdout
	@work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
	  git clone -q "$(ROOT)" "$$work/clone" && mkdir -p "$$work/cache" && cd "$$work/clone" && \
	  env -i HOME="$$HOME" PATH="$${PATH#$(TOOLS_BIN):}" LANG=C.UTF-8 \
	    CI=true XDG_CACHE_HOME="$$work/cache" BASE_IMAGE_NAME=elpv-base-cold-$$$$ \
	    /usr/bin/time -f '>> bench-ci-cold: .ci/run took %e s wall, %U s user, %S s system' \
	    bash .ci/run < /dev/null; \
	  for f in "$$work"/cache/elpv-gitops/sandbox/build-logs/*.time; do \
	    printf '>> cold build %-24s %s\n' "$$(basename $$f .time)" "$$(grep -E 'Elapsed' $$f | sed 's/.*: //')"; done
.PHONY: bench-ci-cold
