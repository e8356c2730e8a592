#!/usr/bin/env bash
# Make a Docker daemon answer: install Debian's docker.io and start dockerd when none runs.
# Idempotent; safe to call from .ci/run and by hand. See docs/development.md.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker-up: installing Debian's docker.io (needs root and apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi
echo "docker-up: starting dockerd (no bridge network: steps get 'none' or 'host')" >&2
# Its own session (setsid): the daemon outlives the shell or job that started it.
rm -f /var/run/docker.pid
setsid nohup dockerd --bridge=none --iptables=false >/var/log/sluice-dockerd.log 2>&1 < /dev/null &
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "docker-up: dockerd did not answer within 60 s; see /var/log/sluice-dockerd.log" >&2
tail -n 20 /var/log/sluice-dockerd.log >&2 || true
exit 1
