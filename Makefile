# One named entry point per task, used by people and CI alike.
# The two commands a newcomer needs:  `make run`  (main job)  and  `make test`  (all checks).
# Each concern keeps its targets in mk/<concern>.mk; this file holds set-up and the two entry points.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

ROOT      := $(CURDIR)
TOOLS     := $(ROOT)/.tools
PYTHON    ?= python3.11
UV_VERSION := 0.13.9
UV        := $(TOOLS)/uv/bin/uv
VENV      := $(ROOT)/.venv
BIN       := $(VENV)/bin
# Per-user caches shared by every clone on the machine (Go modules and build cache, the sandbox's
# Kubernetes/Argo CD binaries, the DVC remote; uv and pip keep theirs in ~/.cache too). A fresh
# machine fills them on first use; everything in them is keyed by version, so it is never stale.
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/elpv-gitops
# uv must trust the system CA store (TLS to PyPI may be intercepted by a local CA).
export UV_SYSTEM_CERTS := 1
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(PYTHON)
# Extra checks that each concern adds to `make test` (see mk/*.mk).
TEST_TARGETS :=

include $(sort $(wildcard mk/*.mk))

.PHONY: help setup run test lint typecheck unit clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'

$(UV):
	@echo ">> installing uv $(UV_VERSION) into .tools/uv"
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet "uv==$(UV_VERSION)"

# The venv is re-synced whenever the lock or the project metadata change.
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	@echo ">> syncing .venv from uv.lock (first run downloads TensorFlow: a few minutes)"
	$(UV) sync --frozen
	@touch $@

setup: $(VENV)/.synced ## install the pinned Python environment (idempotent)

run: setup ## main job: get the data, run the DVC pipeline end to end, print a summary
	$(MAKE) pipeline

test: setup ## everything CI checks: lint, types, tests, manifests, workflows, container
	$(MAKE) lint typecheck unit $(TEST_TARGETS)
	@echo ">> make test: all checks passed"

lint: setup ## ruff lint + format check, import contracts (layers, no cycles: pyproject.toml)
	$(BIN)/ruff check src tests bench sandbox
	$(BIN)/ruff format --check src tests bench sandbox
	$(BIN)/lint-imports

typecheck: setup ## mypy --strict over src/, bench/ and sandbox/
	$(BIN)/mypy

unit: setup ## pytest, default suite (not slow, not e2e, not container)
	$(BIN)/pytest

clean: ## remove build outputs (keeps .venv, .tools and the DVC cache)
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
