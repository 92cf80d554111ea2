# The serving image: LiteRT model + FastAPI service, no TensorFlow, no pipeline or delivery code.
#
# Built by `make image` (docker/build.sh), which supplies every ARG below. On GitHub the base is
# the official python:3.11-slim; here, where no registry can be reached, `make image` passes a
# local debootstrap base (docker/base/build.sh). Both stages must use the same base, so the
# venv's interpreter path stays valid in the final stage.
#
# Python packages come from a host-side wheelhouse (`make wheelhouse`: uv.lock -> hashed
# requirements -> `pip download`), never from the network inside the build: builds are
# reproducible, hash-checked, and need no CA inside the container.
# checkov:skip=CKV_DOCKER_7: the base is a build argument: the digest-pinned python:3.11-slim stage below on GitHub, and a content-named local base (elpv-base:bookworm-py311-<recipe hash>) here; checkov cannot see through ARG.
#
# The GitHub base is pinned by digest (the python:3.11-slim multi-arch index), in a FROM line of
# its own, because Dependabot's docker ecosystem reads FROM lines and not ARG defaults: its
# weekly PR moves the digest (docs/delivery.md, "Pins"). BuildKit never pulls this stage
# when BASE_IMAGE names another base, as `make image` does here.
ARG BASE_IMAGE=python-base
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS python-base

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build
# Sources of the exported model (model.tflite + model_card.json), relative to the context.
# It must also be allowed in .dockerignore (models/ and build/test-model/ are).
ARG MODEL_DIR=models
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /build

# The serving dependencies: [project].dependencies exported from uv.lock with hashes. pip runs
# from its own wheel (pip-*.whl/pip), so the venv is created --without-pip and the final image
# has no installer at all. --ignore-requires-python: see docker/wheelhouse.sh (uv lock semantics).
# Trimmed after install (~35 MB): packages' own test suites, and LiteRT's WebGPU accelerator,
# NPU vendor plugins and ahead-of-time compiler, which a CPU-only interpreter never loads (the
# container tests run the real model through what is left).
COPY build/image/requirements.txt build/image/requirements.txt
COPY build/image/wheels/ build/image/wheels/
RUN python3 -m venv --without-pip /opt/venv \
 && pip_wheel="$(echo build/image/wheels/pip-*.whl)" \
 && /opt/venv/bin/python "$pip_wheel/pip" install \
        --no-index --find-links build/image/wheels --require-hashes --only-binary=:all: \
        --ignore-requires-python \
        -r build/image/requirements.txt \
 && echo /opt/app > /opt/venv/lib/python3.11/site-packages/classifier-app.pth \
 && find /opt/venv -name '*.dist-info' -prune -o -type d -name tests -prune -exec rm -rf {} + \
 && cd /opt/venv/lib/python3.11/site-packages/ai_edge_litert \
 && rm -rf libLiteRtWebGpuAccelerator.so vendors aot tools/apply_plugin_main \
 && cd /build \
 && /opt/venv/bin/python -c "import ai_edge_litert, fastapi, numpy, PIL, uvicorn"

# The service package only: .dockerignore leaves classifier/pipeline and src/gitops out of the
# context, so they cannot reach the image. Byte-compiled here (the root fs is read-only at run
# time) with hash-checked .pycs that do not depend on file timestamps.
COPY src/classifier/ /opt/app/classifier/
RUN test ! -e /opt/app/classifier/pipeline \
 && /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/app \
 && chmod -R a=rX,u+w /opt/app

COPY ${MODEL_DIR}/model.tflite ${MODEL_DIR}/model_card.json /opt/model/
RUN chmod -R a=rX,u+w /opt/model

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

# A fixed, non-root identity: Kubernetes' runAsUser/runAsGroup/fsGroup use the same numbers.
# No home directory: nothing may be written outside /tmp (the root fs is mounted read-only).
RUN echo 'elpv:x:10001:10001:elpv classifier:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'elpv:x:10001:' >> /etc/group

# Three layers that change at different rates: dependencies (uv.lock), code, model.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app
COPY --from=build /opt/model /opt/model

ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    CLASSIFIER_MODEL_DIR=/opt/model \
    CLASSIFIER_PORT=8080

# OCI annotations (https://github.com/opencontainers/image-spec/blob/main/annotations.md) and
# what the model is, read from its card by docker/build.sh. Last, so a new label rebuilds no
# layer.
ARG SOURCE_URL=unknown
ARG REVISION=unknown
ARG CREATED=unknown
ARG VERSION=unknown
ARG MODEL_VERSION=unknown
ARG MODEL_DATA_HASH=unknown
ARG MODEL_ACCURACY=unknown
ARG MODEL_BALANCED_ACCURACY=unknown
ARG MODEL_ROC_AUC=unknown
ARG MODEL_F1=unknown
LABEL org.opencontainers.image.title="elpv-classifier" \
      org.opencontainers.image.description="ELPV solar-cell defect classifier: LiteRT CNN behind FastAPI" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.version="${VERSION}" \
      io.elpv.model.version="${MODEL_VERSION}" \
      io.elpv.model.data-hash="${MODEL_DATA_HASH}" \
      io.elpv.model.accuracy="${MODEL_ACCURACY}" \
      io.elpv.model.balanced-accuracy="${MODEL_BALANCED_ACCURACY}" \
      io.elpv.model.roc-auc="${MODEL_ROC_AUC}" \
      io.elpv.model.f1="${MODEL_F1}"

USER 10001:10001
EXPOSE 8080
# Docker's own liveness check (Kubernetes ignores it and uses the probes in k8s-base/).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('CLASSIFIER_PORT', '8080')}/livez\", timeout=2)"]
# Exec form: python is PID 1 and receives SIGTERM itself; uvicorn then drains in-flight requests.
ENTRYPOINT ["/opt/venv/bin/python", "-m", "classifier.serving"]
