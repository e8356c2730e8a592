#!/usr/bin/env bash
# Make the CNCF distribution registry available (Debian's docker-registry package), for the
# tests that push the engine image to a registry on loopback and pull it by digest.
# Idempotent: installs only when the program is missing. Starts nothing: each test session
# serves its own registry (tests/ghemu/fixtures.py), on 127.0.0.1 with a throwaway root.
#   bash scripts/registry-up.sh
set -euo pipefail

if command -v docker-registry >/dev/null 2>&1; then
  exit 0
fi
echo "registry-up: installing Debian's docker-registry (needs root and apt)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
command -v docker-registry >/dev/null 2>&1 || {
  echo "registry-up: docker-registry is still missing after the install" >&2
  exit 1
}
