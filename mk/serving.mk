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
	CLASSIFIER_MODEL_DIR=$(SERVE_MODEL_DIR) \
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
# In `make test`: the backpressure promises (bounded p99 at 4x the peak, clean refusals, memory
# under the pod's limit) hold only on a real server under real load (docs/serving.md).
TEST_TARGETS += test-overload

# Peer model servers (KServe, LitServe, BentoML, MLServer) serving the same model: each in its own
# venv under .tools/peers/<name> from its pinned bench/peers/requirements/<name>.txt (their
# dependencies conflict with ours and with each other's). See docs/serving.md, "Against the peers".
PEERS        := kserve litserve bentoml mlserver
PEER_REQS    := bench/peers/requirements
PEER_VENVS   := $(PEERS:%=$(TOOLS)/peers/%/.synced)
PEERS_ARGS   ?=  # e.g. --rounds 5 --seconds 10 (python -m bench.peers --help)

.PHONY: bench-peers peer-venvs peer-requirements test-peers

$(TOOLS)/peers/%/.synced: $(PEER_REQS)/%.txt | $(UV)
	@echo ">> peer venv $* from $<"
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(TOOLS)/peers/$*
	VIRTUAL_ENV=$(TOOLS)/peers/$* $(UV) pip sync --quiet --python $(TOOLS)/peers/$*/bin/python $<
	@touch $@

peer-venvs: $(PEER_VENVS) ## the peer servers' venvs (.tools/peers/<name>) from their pinned requirements

peer-requirements: | $(UV) ## re-pin bench/peers/requirements/<name>.txt from <name>.in (PyPI)
	for p in $(PEERS); do \
	  $(UV) pip compile --quiet --python-version 3.11 $(PEER_REQS)/$$p.in -o $(PEER_REQS)/$$p.txt; \
	done

bench-peers: setup $(VEGETA) $(PEER_VENVS) ## our service vs KServe, LitServe, BentoML, MLServer -> docs/benchmarks.md
	VEGETA=$(VEGETA) PEERS_DIR=$(TOOLS)/peers $(BIN)/python -m bench.peers $(PEERS_ARGS)

test-peers: setup $(PEER_VENVS) ## each peer server answers our service's probability (HTTP only)
	PEERS_DIR=$(TOOLS)/peers $(BIN)/pytest -m slow tests/serving/test_peers.py
