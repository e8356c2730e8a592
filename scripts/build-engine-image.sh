#!/usr/bin/env bash
# Build the engine image (the Action's Dockerfile) offline; print its tag on stdout.
#   bash scripts/build-engine-image.sh
#
# Where no registry answers, `python:3.11-slim` cannot be pulled and the local stand-in
# has no git, so this builds from the same Dockerfile GitHub uses, with two build args:
#   BASE=sluice-test/engine-base:3   a STAND-IN for python:3.11-slim with git, made once
#                                    with debootstrap from Debian's packages (1 to 3 min)
#   WHEELS=wheels                    the engine and its dependencies as wheels, made on the
#                                    host (`pip wheel`; pip alone may reach PyPI), so that
#                                    `docker build --network none` installs with --no-index
# The image is tagged sluice-test/engine:<digest of everything that goes into it>: an
# unchanged engine is never rebuilt, a changed one always is. Dependency wheels are kept in
# ~/.cache/sluice/engine-wheels, so later builds need no network at all.
#
# Environment: SLUICE_ENGINE_BASE (another base image with python, pip and git),
# SLUICE_ENGINE_EXTRAS (extras to install, e.g. s3,gcs,azure,drift; default s3, which the
# Action's S3 test needs, and no more, to keep test builds small: the Dockerfile's own
# default installs them all).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_TAG=sluice-test/engine-base:3
base="${SLUICE_ENGINE_BASE:-$BASE_TAG}"
extras="${SLUICE_ENGINE_EXTRAS-s3}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/sluice/engine-wheels"

say() { echo "build-engine-image: $*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base() {
  have_image "$BASE_TAG" && return 0
  if ! dpkg -s debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq debootstrap >/dev/null
  fi
  say "building a STAND-IN base $BASE_TAG (python:3.11-slim + git) from Debian packages"
  local root
  root=$(mktemp -d)
  debootstrap --variant=minbase \
    --include=python3,python3-pip,python-is-python3,git,ca-certificates \
    bookworm "$root" >/tmp/sluice-engine-base.log 2>&1 || {
      tail -n 30 /tmp/sluice-engine-base.log >&2; rm -rf "$root"; exit 1; }
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED  # pip works as in the official image
  # Debian 12's Python is 3.11.2, older than the official image's: the engine's archive
  # extraction has a checked fallback for Pythons without tarfile filters, used here.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'LABEL org.sluice.stand-in="python:3.11-slim with git, from Debian bookworm packages"' \
    -c 'CMD ["python3"]' - "$BASE_TAG" >/dev/null
  rm -rf "$root"
  say "built stand-in $BASE_TAG"
}

# Everything the image is made of; engine/ as it is on disk (new files included).
digest() {
  {
    echo "base=$(docker image inspect --format '{{.Id}}' "$base") extras=$extras"
    find Dockerfile pyproject.toml README.md engine -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

build_base
have_image "$base" || { say "base image $base is missing"; exit 1; }
tag="sluice-test/engine:$(digest)"
if have_image "$tag"; then
  echo "$tag"
  exit 0
fi

start=$SECONDS
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp Dockerfile pyproject.toml README.md "$ctx/"
tar -c --exclude=__pycache__ --exclude='*.pyc' engine | tar -x -C "$ctx"
mkdir -p "$cache" "$ctx/wheels"
spec="$ctx${extras:+[$extras]}"
# (grep: this machine's pip configuration warns about find-links folders it lacks)
quiet_pip() { python3 -m pip -q --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2); }
pip_wheel() { quiet_pip wheel -w "$ctx/wheels" "$@" "$spec"; }
# Offline first (cached dependencies and build backend), else let pip use PyPI once.
if ! pip_wheel --no-index --find-links "$cache" 2>/dev/null; then
  say "fetching dependency wheels with pip (cached in $cache)"
  quiet_pip download -d "$cache" "setuptools>=68" wheel
  pip_wheel --find-links "$cache"
fi
find "$ctx/wheels" -name '*.whl' ! -name 'sluice-*' -exec cp -n {} "$cache/" \;
say "wheels ready in $((SECONDS - start)) s; building $tag with no network"
DOCKER_CLI_HINTS=false docker build --network none -q -t "$tag" --label org.sluice.engine-test=1 \
  --build-arg BASE="$base" --build-arg WHEELS=wheels --build-arg EXTRAS="$extras" \
  "$ctx" >/dev/null
say "built $tag in $((SECONDS - start)) s"
# Builds of older engines are garbage after a day (not sooner: other test sessions on this
# daemon may be using theirs right now).
docker image prune -af --filter label=org.sluice.engine-test=1 --filter until=24h >/dev/null || true
echo "$tag"
