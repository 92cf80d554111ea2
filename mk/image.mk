# The serving image: local Docker Engine + registry, debootstrap base, host-side wheelhouse,
# build, push, container tests, Dockerfile policy scan, image benchmark. See docs/image.md.
#
#   make image | push            build / build + push 127.0.0.1:5000/elpv-classifier:<git sha>
#   make test-container          the container tests; starts and stops its own services
#   make services-down           stop every service this project's targets started
IMAGE_NAME   ?= elpv-classifier
REGISTRY     ?= 127.0.0.1:5000
MODEL_DIR    ?= models
IMAGE_JSON   ?= build/image.json
# "local": the debootstrap base built here (no registry reachable). On GitHub: python:3.11-slim.
BASE_IMAGE   ?= local
# Tag = the full git SHA of the source commit; "-dirty" when what goes into the image (code,
# lock, Dockerfile) differs from that commit, so a tag never names two different builds.
IMAGE_GIT_SHA := $(shell git rev-parse HEAD 2>/dev/null || echo nogit)
IMAGE_DIRTY   := $(shell git status --porcelain --untracked-files=no -- src/classifier uv.lock pyproject.toml Dockerfile .dockerignore 2>/dev/null | grep -q . && echo -dirty)
IMAGE_TAG    ?= $(IMAGE_GIT_SHA)$(IMAGE_DIRTY)
IMAGE_REF     = $(REGISTRY)/$(IMAGE_NAME):$(IMAGE_TAG)

IMAGE_BUILD  := build/image
PIP_VERSION  := 26.3
IMAGE_PIP    := $(TOOLS)/pip-$(PIP_VERSION)/bin/pip
SERVICES     := docker/services.sh
TEST_MODEL   := build/test-model
# Run container tests with their own image name, so they never overwrite a real model's tag.
TEST_IMAGE_NAME := elpv-classifier-test
TEST_IMAGE_JSON := build/test-image.json

.PHONY: services-up services-down services-status images-prune base-image wheelhouse image push test-model \
        lint-dockerfile test-container test-container-run bench-image

services-up: ## install (apt) and start dockerd + the local registry if not running
	$(SERVICES) up

services-down: ## stop dockerd and the registry if (and only if) this project started them
	$(SERVICES) down

services-status: ## which services run, and whether this project started them
	$(SERVICES) status

images-prune: ## remove this project's images of other commits (each test run tags ~3 GB)
	$(SERVICES) run -- docker/prune-images.sh '$(IMAGE_GIT_SHA)'

# A pinned pip of our own for `pip download` (the host's pip version varies between machines).
$(IMAGE_PIP):
	$(PYTHON) -m venv $(TOOLS)/pip-$(PIP_VERSION)
	$(TOOLS)/pip-$(PIP_VERSION)/bin/pip install --quiet "pip==$(PIP_VERSION)"

$(IMAGE_BUILD)/.wheelhouse: uv.lock docker/wheelhouse.sh | $(IMAGE_PIP) $(UV)
	UV=$(UV) PIP=$(IMAGE_PIP) PIP_VERSION=$(PIP_VERSION) docker/wheelhouse.sh $(IMAGE_BUILD)
	@touch $@

wheelhouse: $(IMAGE_BUILD)/.wheelhouse ## serving wheels from uv.lock into build/image/wheels (host side)

base-image: services-up ## the local debootstrap base image (reused when it exists)
	docker/base/build.sh

# The base is resolved at recipe time: the local one is (re)built only when it is missing.
image: wheelhouse services-up ## build $(IMAGE_REF) with the model in MODEL_DIR
	base='$(BASE_IMAGE)'; if [[ $$base == local ]]; then base="$$(docker/base/build.sh)"; fi; \
	REVISION=$(IMAGE_GIT_SHA) docker/build.sh '$(IMAGE_REF)' '$(MODEL_DIR)' "$$base"

push: image ## push to the local registry; writes build/image.json {image, tag, digest}
	docker/push.sh '$(REGISTRY)/$(IMAGE_NAME)' '$(IMAGE_TAG)' '$(IMAGE_JSON)'

$(TEST_MODEL)/model.tflite: tests/container/tiny_model.py src/classifier/pipeline/export.py | $(VENV)/.synced
	$(BIN)/python tests/container/tiny_model.py $(TEST_MODEL)

test-model: $(TEST_MODEL)/model.tflite ## tiny exported model for image tests (build/test-model)

lint-dockerfile: $(CHECKOV) ## checkov's Dockerfile policies: zero failures, skips carry reasons
	$(CHECKOV) --framework dockerfile --file Dockerfile --quiet --compact --skip-download

# Services are started here and stopped by services.sh's trap, whatever happens, when this
# target started them: `make test` leaves nothing running; a dockerd that was already there
# stays.
test-container: setup ## build, push, pull back and test the image in a locked-down container
	$(SERVICES) run -- $(MAKE) test-container-run

test-container-run: test-model
	$(MAKE) push IMAGE_NAME=$(TEST_IMAGE_NAME) MODEL_DIR=$(TEST_MODEL) IMAGE_JSON=$(TEST_IMAGE_JSON)
	ELPV_IMAGE_JSON=$(TEST_IMAGE_JSON) ELPV_TEST_MODEL_DIR=$(TEST_MODEL) \
	  $(BIN)/pytest -m container tests/container -p no:cacheprovider

bench-image: setup test-model ## image size, start-to-ready, RSS vs a TensorFlow image -> docs/benchmarks.md
	$(SERVICES) run -- $(MAKE) bench-image-run

.PHONY: bench-image-run
bench-image-run: wheelhouse
	$(MAKE) push IMAGE_NAME=$(TEST_IMAGE_NAME) MODEL_DIR=$(TEST_MODEL) IMAGE_JSON=$(TEST_IMAGE_JSON)
	UV=$(UV) PIP=$(IMAGE_PIP) PIP_VERSION=$(PIP_VERSION) $(BIN)/python -m bench.image \
	  --image-json $(TEST_IMAGE_JSON) --model-dir $(TEST_MODEL) --base "$$(docker/base/build.sh)"

TEST_TARGETS += lint-dockerfile test-container
