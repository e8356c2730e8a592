# The Sluice engine image: what the GitHub Action runs (action.yml: `image: Dockerfile`).
#
# Default build (GitHub, or any machine that reaches a registry and PyPI):
#   docker build -t sluice .
# Offline build, from a folder of wheels in the build context (the engine and every
# dependency, made with `pip wheel -w wheels .`) and a base image that already has git:
#   docker build --network none --build-arg BASE=IMAGE --build-arg WHEELS=wheels .
# scripts/build-engine-image.sh does the offline build, stand-in base included.
#
# It runs as root: GitHub runs Docker actions as root and mounts the workspace and the
# Docker socket; the entrypoint hands the files it creates back to the workspace's owner.
# PID 1 is Python with signal handlers (engine.action), which forwards SIGINT, SIGTERM and
# SIGHUP to the engine, so a cancelled job removes its step containers.
ARG BASE=python:3.11-slim
FROM ${BASE}

# Extras: remote artifact stores (artifacts: s3://, gs://, az://) and Parquet for drift.
ARG EXTRAS=s3,gcs,azure,drift
ARG WHEELS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# git records results on the results branch; the slim image has none.
RUN if ! command -v git >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends git ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

COPY pyproject.toml README.md /src/
COPY engine /src/engine
# COPY needs a source even when WHEELS is empty: pyproject.toml stands in (never used).
COPY ${WHEELS:-pyproject.toml} /wheels/

RUN if [ -n "$WHEELS" ]; then \
        python -m pip install --no-index --find-links /wheels "sluice${EXTRAS:+[$EXTRAS]}"; \
    else \
        python -m pip install "/src${EXTRAS:+[$EXTRAS]}"; \
    fi \
    && rm -rf /src /wheels \
    && sluice --version

ENTRYPOINT ["python", "-m", "engine.action"]
