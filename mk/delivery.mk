# Delivery: the gitops CLI's environment, the workflow checks, and the small named steps that
# .github/workflows/ call (every `run:` there is `make <target>` or `gitops <command>`).
# See docs/delivery.md. mk/tools.mk is included after this file, so its variables
# ($(KUSTOMIZE), $(ACTIONLINT)) are used in recipes only, never in rule lines.

WORKFLOWS       := $(wildcard .github/workflows/*.yml)
# A slim venv for jobs that only move images (no TensorFlow): the project + the delivery group.
DELIVERY_VENV   := $(TOOLS)/delivery-venv
# What retrains the model: a PR touching these gets a pipeline run and a metric-diff comment.
ML_INPUTS       := src/classifier params.yaml data.dvc dvc.yaml dvc.lock
# Where the PR comment and the build args land (both read by later workflow steps).
METRICS_DIFF_MD := build/metrics-diff.md
MODEL_DIR       ?= models
# The base revision a PR is compared against (the workflow passes the PR's base SHA).
BASE_REV        ?= origin/main

.PHONY: delivery-tools check-workflows setup-delivery ci-ml-changed metrics-diff-report \
        ci-build-args sign-image deploy-status

delivery-tools: ## build the pinned kustomize and actionlint that gitops and its checks use
	@$(MAKE) -s $(KUSTOMIZE) $(ACTIONLINT)

# The gitops tests (part of `make unit`) drive the real kustomize.
unit: delivery-tools

check-workflows: setup delivery-tools ## actionlint, zizmor (offline), workflow schemas, contract test
	@echo ">> actionlint $(ACTIONLINT_VERSION)"
	$(ACTIONLINT) -no-color $(WORKFLOWS)
	@echo ">> zizmor --offline (suppressions with reasons: .github/zizmor.yml)"
	$(BIN)/zizmor --offline --no-progress --persona auditor --config .github/zizmor.yml .github/workflows
	@echo ">> check-jsonschema: workflow and dependabot schemas (vendored, offline)"
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	$(BIN)/check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	@echo ">> workflow contract: run steps call make targets or gitops; uses pinned by SHA"
	$(BIN)/pytest -q -p no:cacheprovider tests/workflows
	@echo ">> check-workflows: $(words $(WORKFLOWS)) workflows passed every check"

TEST_TARGETS += check-workflows

setup-delivery: | $(UV) ## (CI) slim venv with gitops only, put on PATH for later steps
	UV_PROJECT_ENVIRONMENT=$(DELIVERY_VENV) $(UV) sync --frozen --no-default-groups --group delivery
	@if [[ -n "$${GITHUB_PATH:-}" ]]; then echo "$(DELIVERY_VENV)/bin" >> "$$GITHUB_PATH"; fi
	@echo ">> setup-delivery: $(DELIVERY_VENV)/bin/gitops"

ci-ml-changed: ## (CI) changed=true|false in $$GITHUB_OUTPUT: does HEAD change ML inputs vs BASE_REV?
	@if git diff --quiet $(BASE_REV) HEAD -- $(ML_INPUTS); then changed=false; else changed=true; fi; \
	  echo ">> ML inputs ($(ML_INPUTS)) changed since $(BASE_REV): $$changed"; \
	  if [[ -n "$${GITHUB_OUTPUT:-}" ]]; then echo "changed=$$changed" >> "$$GITHUB_OUTPUT"; fi

metrics-diff-report: setup ## (CI) `dvc metrics diff` against BASE_REV (+ the gate's report, if made) in build/metrics-diff.md
	@mkdir -p $(dir $(METRICS_DIFF_MD))
	{ echo "### Model metrics: this PR vs \`$(BASE_REV)\`"; echo; \
	  $(BIN)/dvc metrics diff --md --precision 4 $(BASE_REV); echo; \
	  echo "<sub>\`dvc metrics diff $(BASE_REV)\` after \`dvc repro\` on $$(git rev-parse --short HEAD)</sub>"; \
	  if [[ -f $(GATE_REPORT) ]]; then echo; cat $(GATE_REPORT); fi; \
	} > $(METRICS_DIFF_MD)
	@echo ">> metrics diff written to $(METRICS_DIFF_MD)"

ci-build-args: ## (CI) docker build args (labels from git + model card) as `args` in $$GITHUB_OUTPUT
	@args="$$(PYTHONPATH=src $(PYTHON) -m gitops image-args --model-dir $(MODEL_DIR))"; echo "$$args"; \
	  if [[ -n "$${GITHUB_OUTPUT:-}" ]]; then \
	    { echo "args<<GITOPS_EOF"; echo "$$args"; echo "GITOPS_EOF"; } >> "$$GITHUB_OUTPUT"; fi

sign-image: ## (CI) keyless cosign signature of SIGN_REF (image@sha256:...) via the job's OIDC token
	@[[ "$(SIGN_REF)" == *@sha256:* ]] || { echo "sign-image: SIGN_REF must be name@sha256:<digest>, got '$(SIGN_REF)'" >&2; exit 2; }
	cosign sign --yes "$(SIGN_REF)"
	@echo ">> signed $(SIGN_REF) (keyless, Rekor transparency log)"

deploy-status: setup ## what each environment runs (image, digest, revision, metrics)
	$(BIN)/gitops status
