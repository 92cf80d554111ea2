# The training image: the DVC pipeline's code and its dependencies (TensorFlow, DVC, ...) from
# uv.lock, for running the train stage as a Kubernetes Job (k8s-train/, docs/pipeline.md,
# "Training in the cluster"). Not the serving image: that one is the root Dockerfile, without
# TensorFlow.
#
# Built by `make train-image` (docker/train-build.sh) from a context of its own, build/train-image/:
#   requirements.txt + wheels/   docker/train-wheelhouse.sh (uv.lock -> hashed wheels, host side)
#   workspace/                   the commit's pipeline: dvc.yaml, dvc.lock, params.yaml, data.dvc,
#                                .dvc/config, src/classifier (what `dvc repro train` needs)
#   train-entrypoint.sh          the entrypoint (docker/train-entrypoint.sh)
# The wheels are bind-mounted into the one RUN that installs them (BuildKit), so ~1 GB of
# wheels never becomes a layer, and the dependency layer is rebuilt only when the lock changes.
# checkov:skip=CKV_DOCKER_7: the base is a build argument, as in the root Dockerfile (there: why).
ARG BASE_IMAGE=python-base
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS python-base

FROM ${BASE_IMAGE}

# The same fixed non-root identity as the serving image; the Job's securityContext uses it.
RUN echo 'elpv:x:10001:10001:elpv trainer:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'elpv:x:10001:' >> /etc/group

# Dependencies first (changes with uv.lock only). pip runs from its own wheel; no pip in the
# venv. Packages' own test suites are dropped (~100 MB of TensorFlow's alone).
RUN --mount=type=bind,source=wheels,target=/wheels \
    --mount=type=bind,source=requirements.txt,target=/requirements.txt \
    python3 -m venv --without-pip /opt/venv \
 && pip_wheel="$(echo /wheels/pip-*.whl)" \
 && PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    /opt/venv/bin/python "$pip_wheel/pip" install --quiet \
        --no-index --find-links /wheels --require-hashes --only-binary=:all: \
        --ignore-requires-python -r /requirements.txt \
 && find /opt/venv -name '*.dist-info' -prune -o -type d -name tests -prune -exec rm -rf {} + \
 && /opt/venv/bin/python -c "import dvc, numpy, PIL, sklearn, yaml" \
 && /opt/venv/bin/python -c "import tensorflow"

# The pipeline at this commit (copied to the volume by the entrypoint: DVC writes beside it).
COPY workspace/ /opt/workspace/
COPY train-entrypoint.sh /opt/train/train-entrypoint.sh
RUN chmod -R a=rX,u+w /opt/workspace /opt/train && chmod a+x /opt/train/train-entrypoint.sh

ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TRAIN_VOLUME=/data

ARG REVISION=unknown
ARG SOURCE_URL=unknown
LABEL org.opencontainers.image.title="elpv-train" \
      org.opencontainers.image.description="ELPV pipeline: dvc repro of the train stage (TensorFlow CPU)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}"

USER 10001:10001
# A batch job: nothing listens, so there is nothing for a health check to ask.
HEALTHCHECK NONE
ENTRYPOINT ["/opt/train/train-entrypoint.sh"]
