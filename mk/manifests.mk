# Kubernetes manifests: `gitops validate` (src/gitops/commands/validate) renders every overlay with
# the pinned kustomize, validates the output offline against the Kubernetes JSON schemas of every
# supported version (kubeconform -strict), validates argocd/ against the Argo CD CRD schemas, scans
# with checkov and kube-score, and runs the project policies. This file only builds the pinned
# CLIs it runs and calls it; the schemas (`gitops validate schemas`) are built once into
# .tools/schemas and rebuilt when a pin changes.

# Argo CD's CRDs come from the argo-cd module at the version the local sandbox runs
# (sandbox/tools/versions.sh, ARGOCD_VERSION), so both agree on the schema.
-include sandbox/tools/versions.sh
ARGOCD_CRDS_VERSION := $(or $(ARGOCD_VERSION),v3.5.3)
KUBE_SCORE_VERSION := v1.20.0
# mk/tools.mk is included after this file, so its variables ($(KUSTOMIZE), $(TOOLS_BIN) ...)
# are empty while this file is read: they are only used in recipes, never in rule lines.
KUBE_SCORE := $(TOOLS)/bin/kube-score-$(KUBE_SCORE_VERSION)

# `gitops validate` and the manifest tests find the pinned tools through these variables.
export KUSTOMIZE KUBECONFORM CHECKOV KUBE_SCORE

$(KUBE_SCORE):
	$(call go_install,github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION),kube-score,$@)

.PHONY: manifest-tools manifest-schemas validate
manifest-schemas: setup ## build the offline Kubernetes + Argo CD JSON schemas into .tools/schemas (cached)
	$(BIN)/gitops validate schemas --python $(PYTHON) --go $(GO) \
	  --argocd-version $(ARGOCD_CRDS_VERSION) --kubeconform-version $(KUBECONFORM_VERSION)

manifest-tools: ## build everything `make validate` needs (pinned CLIs + schemas; cached)
	@$(MAKE) -s $(KUSTOMIZE) $(KUBECONFORM) $(CHECKOV) $(KUBE_SCORE) manifest-schemas

validate: setup manifest-tools ## render every overlay, argocd/ and cluster/, validate offline, scan, check policies
	$(BIN)/gitops validate

# The manifest tests (tests/manifests) run the same tools: build them before the default suite.
unit: manifest-tools

TEST_TARGETS += validate
