# Pinned command-line tools, built from the Go module proxy into .tools/bin (git-ignored);
# Go's module and build caches live in $(CACHE_DIR)/go, shared between clones.
# Each is rebuilt only when its pinned version changes (the binary name carries the version).
GO          ?= go
TOOLS_BIN   := $(TOOLS)/bin
export GOPATH     ?= $(CACHE_DIR)/go
export GOMODCACHE ?= $(CACHE_DIR)/go/pkg/mod
export GOCACHE    ?= $(CACHE_DIR)/go/cache
export GOFLAGS    := -mod=mod -trimpath
export PATH       := $(TOOLS_BIN):$(PATH)

KUSTOMIZE_VERSION  := v5.8.1
ACTIONLINT_VERSION := v1.7.12
KUBECONFORM_VERSION := v0.7.0

KUSTOMIZE   := $(TOOLS_BIN)/kustomize-$(KUSTOMIZE_VERSION)
ACTIONLINT  := $(TOOLS_BIN)/actionlint-$(ACTIONLINT_VERSION)
KUBECONFORM := $(TOOLS_BIN)/kubeconform-$(KUBECONFORM_VERSION)

# go_install(module/path/cmd@version, binary name, output): build into a throwaway GOBIN, then
# keep it under a versioned name with a plain-name symlink for PATH.
define go_install
	@echo ">> building $(2) from $(1)"
	@mkdir -p $(TOOLS_BIN) $(TOOLS)/gobin-tmp
	GOBIN=$(TOOLS)/gobin-tmp $(GO) install $(1)
	mv $(TOOLS)/gobin-tmp/$(2) $(3)
	ln -sf $(notdir $(3)) $(TOOLS_BIN)/$(2)
endef

$(KUSTOMIZE):
	$(call go_install,sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION),kustomize,$@)
$(ACTIONLINT):
	$(call go_install,github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION),actionlint,$@)
$(KUBECONFORM):
	$(call go_install,github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION),kubeconform,$@)

.PHONY: tools
tools: $(KUSTOMIZE) $(ACTIONLINT) $(KUBECONFORM) ## build the pinned Go CLIs into .tools/bin

# checkov pins an old `packaging`, so it gets a venv of its own instead of joining .venv.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := $(TOOLS)/checkov-$(CHECKOV_VERSION)
CHECKOV         := $(CHECKOV_VENV)/bin/checkov

$(CHECKOV):
	@echo ">> installing checkov $(CHECKOV_VERSION) into its own venv"
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet "checkov==$(CHECKOV_VERSION)"

tools: $(CHECKOV)
