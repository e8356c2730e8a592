#!/usr/bin/env bash
# Build the local images the tests, benchmarks and pipelines/ use, without any registry.
#   sluice-test/busybox:1   a 2 MB busybox root file system (fast engine tests)
#   python:3.11-slim        pulled where a registry answers; otherwise a STAND-IN built
#                           from Debian's packages (python3, numpy, pandas, scikit-learn)
# Only missing images are built; Docker keeps them between runs on one machine.
set -euo pipefail

need_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_busybox() {
  local tag=sluice-test/busybox:1
  have_image "$tag" && return 0
  need_apt busybox-static
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for app in $("$root/bin/busybox" --list); do
    [ "$app" = busybox ] || ln -s busybox "$root/bin/$app"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/bin' -c 'LABEL org.sluice.stand-in=busybox' - "$tag" >/dev/null
  rm -rf "$root"
  echo "build-images: built $tag" >&2
}

build_python() {
  local tag=python:3.11-slim
  have_image "$tag" && return 0
  if timeout 60 docker pull -q "$tag" >/dev/null 2>&1; then
    echo "build-images: pulled $tag" >&2
    return 0
  fi
  need_apt debootstrap
  echo "build-images: no registry answers; building a STAND-IN for $tag from Debian packages (about 90 s)" >&2
  local root
  root=$(mktemp -d)
  debootstrap --variant=minbase \
    --include=python3,python3-pip,python3-numpy,python3-pandas,python3-sklearn,python-is-python3,ca-certificates \
    bookworm "$root" >/tmp/sluice-debootstrap.log 2>&1 || {
      tail -n 30 /tmp/sluice-debootstrap.log >&2; exit 1; }
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'LABEL org.sluice.stand-in="python:3.11-slim built from Debian bookworm packages"' \
    -c 'CMD ["python3"]' - "$tag" >/dev/null
  rm -rf "$root"
  echo "build-images: built stand-in $tag" >&2
}

build_busybox
if [ "${1:-}" != "--busybox-only" ]; then
  build_python
fi
