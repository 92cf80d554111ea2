# The inference service: run it, benchmark it, soak it. See docs/serving.md.
#
#   make serve           run the service on the pipeline's output (models/) on 127.0.0.1:8080
#                        (open, no token: set CLASSIFIER_API_TOKEN to try authentication)
#   make bench-serving   raw vs served vs baselines -> docs/benchmarks.md section `serving`
#   make soak            60 s at ~80 % of peak throughput: zero errors, flat memory
#   make test-serving    the service's tests only (they are part of `make unit` too)
#   make test-overload   load at 4x peak and the heaviest allowed requests on a server process
SERVE_MODEL_DIR ?= models
SERVE_HOST      ?= 127.0.0.1
SERVE_PORT      ?= 8080

# vegeta (load generator) from the Go module proxy, pinned, into .tools/bin.
VEGETA_VERSION := v12.13.0
VEGETA         := $(TOOLS)/bin/vegeta-$(VEGETA_VERSION)

.PHONY: serve bench-serving soak test-serving test-overload vegeta

$(VEGETA):
	@echo ">> building vegeta $(VEGETA_VERSION) from the Go module proxy"
	@mkdir -p $(TOOLS)/bin $(TOOLS)/gobin-vegeta
	GOPATH=$(TOOLS)/go GOMODCACHE=$(TOOLS)/go/pkg/mod GOCACHE=$(TOOLS)/go/cache \
	  GOFLAGS="-mod=mod -trimpath" GOBIN=$(TOOLS)/gobin-vegeta \
	  nice -n 10 go install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)
	mv $(TOOLS)/gobin-vegeta/vegeta $@
	ln -sf $(notdir $@) $(TOOLS)/bin/vegeta

vegeta: $(VEGETA) ## build the pinned vegeta load generator into .tools/bin

serve: setup ## run the service on models/ (the pipeline's output) at 127.0.0.1:8080
	@test -f $(SERVE_MODEL_DIR)/model.tflite -a -f $(SERVE_MODEL_DIR)/model_card.json || \
	  { echo "no model in $(SERVE_MODEL_DIR)/: run 'make run' (the pipeline) first"; exit 1; }
	CLASSIFIER_MODEL_PATH=$(SERVE_MODEL_DIR)/model.tflite \
	CLASSIFIER_MODEL_CARD_PATH=$(SERVE_MODEL_DIR)/model_card.json \
	CLASSIFIER_HOST=$(SERVE_HOST) CLASSIFIER_PORT=$(SERVE_PORT) \
	CLASSIFIER_ALLOW_UNAUTHENTICATED=$${CLASSIFIER_ALLOW_UNAUTHENTICATED:-true} \
	  $(BIN)/python -m classifier.serving

bench-serving: setup $(VEGETA) ## serving benchmark (raw vs served vs baselines, soak) -> docs/benchmarks.md
	VEGETA=$(VEGETA) $(BIN)/python -m bench.serving

soak: setup $(VEGETA) ## 60 s at ~80 % of peak throughput: fails on any error or growing memory
	VEGETA=$(VEGETA) $(BIN)/python -m bench.serving --soak-only

test-serving: setup ## the service's tests only
	$(BIN)/pytest tests/serving

test-overload: setup $(VEGETA) ## overload (vegeta, 4x peak) and worst-case memory tests, with figures
	VEGETA=$(VEGETA) $(BIN)/pytest tests/serving/test_overload.py -m slow -s -q
