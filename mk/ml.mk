# The ML pipeline: data (DVC), `dvc repro`, the metric gate, the model-quality benchmark.
# `make run` calls `$(MAKE) pipeline` after `make setup`. Details: docs/pipeline.md.
DVC         := $(BIN)/dvc
# Stages run `python -m classifier.pipeline.<stage>`: the venv's python must come first.
ML_ENV      := PATH="$(BIN):$$PATH" TF_CPP_MIN_LOG_LEVEL=2
# Training shares the machine: lower its priority so interactive work stays responsive.
ML_NICE     ?= nice -n 10

.PHONY: pipeline data dvc-push gate pipeline-summary bench-model bench-members

data: setup ## get data/raw: `dvc pull`, else rebuild from the elpv-dataset package (hash-checked)
	@if $(DVC) status data.dvc 2>/dev/null | grep -q 'up to date'; then \
	  echo ">> data/raw matches data.dvc"; \
	elif $(DVC) pull data.dvc >/dev/null 2>&1; then \
	  echo ">> data/raw pulled from the DVC remote ($$($(DVC) remote list | head -1))"; \
	else \
	  echo ">> the DVC remote lacks data/raw: rebuilding it from the elpv-dataset package"; \
	  $(ML_ENV) $(BIN)/python -m classifier.pipeline.ingest; \
	  $(DVC) commit -f -q data.dvc; \
	  echo ">> data/raw rebuilt and verified; run 'make dvc-push' to fill the remote"; \
	fi

pipeline: data ## main job: get the data, `dvc repro` (pull cached results first), print a summary
	@# Fetch outputs someone already pushed for this dvc.lock (a no-op when the remote lacks them).
	@$(DVC) pull --allow-missing -q 2>/dev/null || true
	@start=$$(date +%s); $(ML_ENV) $(ML_NICE) $(DVC) repro; \
	  echo ">> dvc repro took $$(( $$(date +%s) - start ))s"
	@$(MAKE) pipeline-summary

pipeline-summary: ## print the pipeline's test metrics and where its artefacts are
	@$(BIN)/python -m classifier.pipeline.summary

# The gate's report as Markdown; `metrics-diff-report` adds it to the PR comment (ci.yml).
GATE_REPORT ?= build/gate.md

gate: setup ## metric gate: the model card vs the floor and prod's card; report in build/gate.md
	$(BIN)/python -m classifier.pipeline.gate --report $(GATE_REPORT)

dvc-push: setup ## push data and pipeline outputs to the default DVC remote
	$(DVC) push

bench-model: setup ## model quality over 5 split seeds -> docs/benchmarks.md (slow: a training per seed)
	$(ML_ENV) $(ML_NICE) $(BIN)/python -m bench.model_quality

bench-members: setup ## inference cost of the ensemble vs one member -> docs/benchmarks.md
	$(ML_ENV) $(BIN)/python -m bench.members_cost
