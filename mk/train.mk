# Training in the cluster (docs/pipeline.md, "Training in the cluster"): the training image
# (docker/train.Dockerfile) and the train stage as a Kubernetes Job (k8s-train/).
#
#   make train-image | train-push   build / build + push 127.0.0.1:5000/elpv-train:<git sha>
#   make train-job                  run `dvc repro train` as a Job in $KUBECONFIG's cluster, wait
#   make train-pull                 its dvc.lock and metrics here, its model from the DVC remote
#   make e2e-live                   includes tests/e2e/test_live_train_job.py (a tiny run)
TRAIN_IMAGE_NAME ?= elpv-train
# cpu: TensorFlow's CPU wheel (uv.lock group `train`); gpu: its CUDA build and NVIDIA's libraries
# (group `train-gpu`, several GB of wheels) for k8s-train/overlays/gpu. Tag and files get "-gpu".
TRAIN_VARIANT    ?= cpu
ifeq ($(filter $(TRAIN_VARIANT),cpu gpu),)
$(error TRAIN_VARIANT=$(TRAIN_VARIANT): use cpu or gpu)
endif
TRAIN_SUFFIX     := $(if $(filter gpu,$(TRAIN_VARIANT)),-gpu)
TRAIN_GROUP      := train$(TRAIN_SUFFIX)
# Tag = git SHA, "-dirty" when what goes into the image differs from that commit.
TRAIN_DIRTY      := $(shell git status --porcelain --untracked-files=no -- src/classifier uv.lock pyproject.toml dvc.yaml dvc.lock params.yaml data.dvc docker/train.Dockerfile docker/train-entrypoint.sh 2>/dev/null | grep -q . && echo -dirty)
TRAIN_IMAGE_TAG  ?= $(IMAGE_GIT_SHA)$(TRAIN_DIRTY)$(TRAIN_SUFFIX)
TRAIN_IMAGE_JSON ?= build/train-image$(TRAIN_SUFFIX).json
TRAIN_BUILD      := build/train-image$(TRAIN_SUFFIX)
# The kustomization the Job is rendered from: k8s-train/base, k8s-train/overlays/{gpu,sandbox}.
TRAIN_OVERLAY    ?= k8s-train/base
# The image the Job runs (NAME:TAG@sha256:...); default: what `make train-push` recorded.
TRAIN_IMAGE      ?=
TRAIN_TIMEOUT    ?= 7200
# The run's dvc.lock and metrics/train.json, saved by `make train-job` when the Job pushed its
# outputs to a DVC remote (k8s-train/components/shared-dvc-remote).
TRAIN_HANDBACK   ?= build/train-job
KUBECTL          ?= kubectl

.PHONY: train-wheelhouse train-context train-image train-push train-job train-pull \
	test-train-gpu-image test-train-gpu-image-run runner-disk-space

$(TRAIN_BUILD)/.wheelhouse: uv.lock docker/train-wheelhouse.sh | $(IMAGE_PIP) $(UV)
	UV=$(UV) PIP=$(IMAGE_PIP) PIP_VERSION=$(PIP_VERSION) TRAIN_GROUP=$(TRAIN_GROUP) \
	  docker/train-wheelhouse.sh $(TRAIN_BUILD)
	@touch $@

train-wheelhouse: $(TRAIN_BUILD)/.wheelhouse ## training wheels (TensorFlow, DVC, ...) from uv.lock into build/train-image[-gpu]

train-context: train-wheelhouse ## (CI) stage the training image's build context in build/train-image[-gpu]
	TRAIN_CONTEXT=$(TRAIN_BUILD) docker/train-build.sh --context-only

train-image: train-wheelhouse services-up ## build the training image (TensorFlow + the pipeline at HEAD; TRAIN_VARIANT=cpu|gpu)
	base='$(BASE_IMAGE)'; if [[ $$base == local ]]; then base="$$(docker/base/build.sh)"; fi; \
	REVISION=$(IMAGE_GIT_SHA) TRAIN_CONTEXT=$(TRAIN_BUILD) docker/train-build.sh '$(REGISTRY)/$(TRAIN_IMAGE_NAME):$(TRAIN_IMAGE_TAG)' "$$base"

train-push: train-image ## push the training image; writes build/train-image[-gpu].json {image, tag, digest}
	docker/push.sh '$(REGISTRY)/$(TRAIN_IMAGE_NAME)' '$(TRAIN_IMAGE_TAG)' '$(TRAIN_IMAGE_JSON)'

train-job: ## run the train stage as a Job in $$KUBECONFIG's cluster (TRAIN_OVERLAY, TRAIN_IMAGE) and wait
	@$(MAKE) -s $(KUSTOMIZE)
	@image='$(TRAIN_IMAGE)'; if [[ -z $$image ]]; then \
	  [[ -f $(TRAIN_IMAGE_JSON) ]] || { echo "train-job: set TRAIN_IMAGE=NAME:TAG@sha256:... or run \`make train-push\` first" >&2; exit 2; }; \
	  image="$$(python3 -c 'import json,sys; print("{image}:{tag}@{digest}".format(**json.load(open(sys.argv[1]))))' $(TRAIN_IMAGE_JSON))"; fi; \
	  KUSTOMIZE=$(KUSTOMIZE) KUBECTL='$(KUBECTL)' TRAIN_HANDBACK_DIR='$(TRAIN_HANDBACK)' \
	  k8s-train/run-job.sh '$(TRAIN_OVERLAY)' "$$image" '$(TRAIN_TIMEOUT)'

train-pull: ## after train-job pushed to a DVC remote: its dvc.lock + train metrics here, dvc pull of its model (TRAIN_REMOTE)
	PATH="$(BIN):$$PATH" DVC=$(BIN)/dvc TRAIN_REMOTE='$(TRAIN_REMOTE)' k8s-train/pull-model.sh '$(TRAIN_HANDBACK)'

.PHONY: lint-train-dockerfile
lint-train-dockerfile: $(CHECKOV) ## checkov's Dockerfile policies on docker/train.Dockerfile
	$(CHECKOV) --framework dockerfile --file docker/train.Dockerfile --quiet --compact --skip-download

TEST_TARGETS += lint-train-dockerfile

# (CI) The CUDA image (its wheels, the build context, a layer of several GB and its export) may
# not fit the space a GitHub-hosted runner starts with, most of it taken by preinstalled
# toolchains this repository never uses. Only on such a runner: elsewhere it would delete SDKs.
runner-disk-space:
	@[[ "$${GITHUB_ACTIONS:-}" == true && "$${RUNNER_ENVIRONMENT:-}" == github-hosted ]] || \
	  { echo "runner-disk-space: only on a GitHub-hosted runner (it deletes preinstalled SDKs)" >&2; exit 2; }
	df -h / && sudo rm -rf /usr/share/dotnet /usr/local/lib/android /opt/ghc /opt/hostedtoolcache/CodeQL && df -h /

# Not in `make test`: the CUDA wheels and image are several GB (docs/training-cluster.md, "GPU").
# No GPU here: what it can show without one (tests/container/test_train_gpu_image.py).
test-train-gpu-image: setup ## build the CUDA training image and test it (no GPU needed)
	$(SERVICES) run -- $(MAKE) test-train-gpu-image-run

test-train-gpu-image-run:
	$(MAKE) train-push TRAIN_VARIANT=gpu
	ELPV_TRAIN_GPU_IMAGE_JSON=build/train-image-gpu.json \
	  $(BIN)/pytest -m train_gpu_image tests/container/test_train_gpu_image.py -p no:cacheprovider
