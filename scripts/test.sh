#!/usr/bin/env bash
# The test command (README.md): sets up everything on a fresh machine, then lints and tests.
#   bash scripts/test.sh [PYTEST ARGS...]
# Installs the package with its dev and drift extras, makes a Docker daemon answer
# (scripts/docker-up.sh), builds the local test images (scripts/build-images.sh),
# runs ruff and mypy --strict, then pytest. Under CI=true a missing Docker fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== install" >&2
python3 -m pip install -q --disable-pip-version-check -e ".[dev,drift]" 2>&1 | grep -v -i "running pip as the 'root' user" || true
python3 -c "import engine, docker, pydantic, croniter, numpy, pyarrow, s3fs, moto.server" >/dev/null

echo "== node tools" >&2
bash scripts/node-tools.sh  # GitHub's workflow parser and expression evaluator, for the tests

echo "== docker" >&2
if ! bash scripts/docker-up.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "test: Docker is required under CI=true and could not be started" >&2
    exit 1
  fi
  echo "test: no Docker; Docker tests will be skipped (they fail under CI=true)" >&2
else
  bash scripts/build-images.sh
  bash scripts/build-engine-image.sh >/dev/null  # the Action's image, built offline
  bash scripts/registry-up.sh  # a real image registry on loopback: the published-image route
fi

echo "== lint" >&2
python3 -m ruff check engine tests benchmarks
python3 -m ruff format --check engine tests benchmarks
python3 -m mypy --strict engine

echo "== tests" >&2
set +e
python3 -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
