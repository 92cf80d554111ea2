# The promotion PR's required check (.github/workflows/promotion-check.yml, `gitops
# promotion-check`): prod's digest in the checked-out tree must be what staging runs, Synced
# and Healthy in Argo CD (ARGOCD_SERVER, ARGOCD_AUTH_TOKEN). Locally, against your Argo CD:
#   ARGOCD_SERVER=https://... ARGOCD_AUTH_TOKEN=... make promotion-check PROMOTION_BASE=origin/main

# The revision whose prod image counts as "unchanged" (a PR's merge commit: its first parent).
PROMOTION_BASE ?= HEAD^1
# CI runs it from the slim delivery venv (`make setup-delivery`), a clone from .venv.
PROMOTION_PYTHON = $(if $(wildcard $(DELIVERY_VENV)/bin/python),$(DELIVERY_VENV)/bin/python,$(BIN)/python)

.PHONY: promotion-check
promotion-check: ## (CI) prod's digest here runs in staging, Synced + Healthy (Argo CD API)
	$(PROMOTION_PYTHON) -m gitops promotion-check --env prod --from staging --base "$(PROMOTION_BASE)"
