# Kubernetes manifests: render every overlay with the pinned kustomize, validate the output
# offline against the Kubernetes JSON schemas of every supported version (kubeconform -strict),
# validate argocd/ against the Argo CD CRD schemas, scan with checkov and kube-score, and run the
# project policies (src/gitops/manifests.py). Schemas are generated once into .tools/schemas.

# Supported Kubernetes versions (the tested pairs of Argo CD 3.5): the same list is
# SUPPORTED_KUBERNETES_VERSIONS in src/gitops/manifests.py (a test keeps them equal).
K8S_VERSIONS := 1.33.0 1.34.0 1.35.0 1.36.0

# Core schemas: strict JSON schemas shipped in this PyPI wheel (pinned by version and hash).
KUBERNETES_VALIDATE_VERSION := 1.37.0
KUBERNETES_VALIDATE_SHA256  := 85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9
# Argo CD CRDs come from the argo-cd module on the Go module proxy, at the version the local
# sandbox runs (sandbox/tools/versions.sh, ARGOCD_VERSION), so both agree on the schema.
-include sandbox/tools/versions.sh
ARGOCD_CRDS_VERSION := $(or $(ARGOCD_VERSION),v3.5.3)
KUBE_SCORE_VERSION := v1.20.0
# Kyverno's CRDs (its ImageValidatingPolicy in cluster/) from the kyverno module on the Go module
# proxy, converted like the Argo CD ones into the same CRD schema folder.
KYVERNO_VERSION := v1.19.1

SCHEMAS        := $(TOOLS)/schemas
K8S_SCHEMAS    := $(SCHEMAS)/kubernetes
ARGOCD_SCHEMAS := $(SCHEMAS)/argo-cd
# Stamps carry the versions: changing a pin regenerates the schemas.
K8S_SCHEMAS_STAMP    := $(K8S_SCHEMAS)/.kubernetes-validate-$(KUBERNETES_VALIDATE_VERSION)-$(subst $(eval) ,_,$(K8S_VERSIONS))
ARGOCD_SCHEMAS_STAMP := $(ARGOCD_SCHEMAS)/.argo-cd-$(ARGOCD_CRDS_VERSION)
KYVERNO_SCHEMAS_STAMP := $(ARGOCD_SCHEMAS)/.kyverno-$(KYVERNO_VERSION)
# mk/tools.mk is included after this file, so its variables ($(KUSTOMIZE), $(TOOLS_BIN) ...)
# are empty while this file is read: they are only used in recipes, never in rule lines.
KUBE_SCORE := $(TOOLS)/bin/kube-score-$(KUBE_SCORE_VERSION)

# The validation module and its tests find the tools through these variables.
export KUSTOMIZE KUBECONFORM CHECKOV KUBE_SCORE K8S_SCHEMAS ARGOCD_SCHEMAS

$(KUBE_SCORE):
	$(call go_install,github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION),kube-score,$@)

$(K8S_SCHEMAS_STAMP): tools/manifest_schemas.py | $(VENV)/.synced
	@echo ">> fetching kubernetes-validate $(KUBERNETES_VALIDATE_VERSION) (PyPI) for the Kubernetes JSON schemas"
	rm -rf $(K8S_SCHEMAS) $(SCHEMAS)/wheel && mkdir -p $(K8S_SCHEMAS) $(SCHEMAS)/wheel
	echo "kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION) --hash=sha256:$(KUBERNETES_VALIDATE_SHA256)" > $(SCHEMAS)/wheel/requirements.txt
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
	  -r $(SCHEMAS)/wheel/requirements.txt -d $(SCHEMAS)/wheel
	$(BIN)/python tools/manifest_schemas.py kubernetes --out $(K8S_SCHEMAS) \
	  --wheel $(SCHEMAS)/wheel/kubernetes_validate-$(KUBERNETES_VALIDATE_VERSION)-py3-none-any.whl \
	  $(addprefix --version ,$(K8S_VERSIONS))
	rm -rf $(SCHEMAS)/wheel
	@touch $@

# `go mod download -json` prints where the module landed in GOMODCACHE ($(CACHE_DIR)/go).
$(ARGOCD_SCHEMAS_STAMP): tools/manifest_schemas.py | $(VENV)/.synced
	@echo ">> fetching the Argo CD $(ARGOCD_CRDS_VERSION) CRDs and kubeconform's converter (Go module proxy)"
	rm -rf $(ARGOCD_SCHEMAS) && mkdir -p $(ARGOCD_SCHEMAS)
	argocd_dir=$$(cd $(TOOLS) && $(GO) mod download -json github.com/argoproj/argo-cd/v3@$(ARGOCD_CRDS_VERSION) \
	  | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'); \
	kubeconform_dir=$$(cd $(TOOLS) && $(GO) mod download -json github.com/yannh/kubeconform@$(KUBECONFORM_VERSION) \
	  | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'); \
	$(BIN)/python tools/manifest_schemas.py argocd --out $(ARGOCD_SCHEMAS) \
	  --crds $$argocd_dir/manifests/crds --converter $$kubeconform_dir/scripts/openapi2jsonschema.py
	@touch $@

# Into the Argo CD folder (one CRD schema tree, one kubeconform location), after it: regenerating
# the Argo CD schemas empties the folder, which makes this stamp older and reruns it.
$(KYVERNO_SCHEMAS_STAMP): $(ARGOCD_SCHEMAS_STAMP) tools/manifest_schemas.py | $(VENV)/.synced
	@echo ">> fetching the Kyverno $(KYVERNO_VERSION) CRDs (Go module proxy)"
	rm -rf $(ARGOCD_SCHEMAS)/policies.kyverno.io
	kyverno_dir=$$(cd $(TOOLS) && $(GO) mod download -json github.com/kyverno/kyverno@$(KYVERNO_VERSION) \
	  | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'); \
	kubeconform_dir=$$(cd $(TOOLS) && $(GO) mod download -json github.com/yannh/kubeconform@$(KUBECONFORM_VERSION) \
	  | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'); \
	$(BIN)/python tools/manifest_schemas.py argocd --out $(ARGOCD_SCHEMAS) \
	  --crds $$kyverno_dir/config/crds/policies.kyverno.io --pattern '*_imagevalidatingpolicies.yaml' \
	  --converter $$kubeconform_dir/scripts/openapi2jsonschema.py
	@touch $@

.PHONY: manifest-tools manifest-schemas validate
manifest-schemas: $(K8S_SCHEMAS_STAMP) $(ARGOCD_SCHEMAS_STAMP) $(KYVERNO_SCHEMAS_STAMP) ## generate the offline Kubernetes + Argo CD + Kyverno JSON schemas into .tools/schemas

manifest-tools: ## build everything `make validate` needs (pinned CLIs + schemas; cached)
	@$(MAKE) -s $(KUSTOMIZE) $(KUBECONFORM) $(CHECKOV) $(KUBE_SCORE) manifest-schemas

validate: setup manifest-tools ## render every overlay, argocd/ and cluster/, validate offline (k8s 1.33-1.36), scan, check policies
	$(BIN)/python -m gitops.manifests validate $(addprefix --kubernetes-version ,$(K8S_VERSIONS))

# The manifest tests (tests/manifests) run the same tools: build them before the default suite.
unit: manifest-tools

TEST_TARGETS += validate
