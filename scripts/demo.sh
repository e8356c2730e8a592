#!/usr/bin/env bash
# The main job (README.md): set up on a fresh machine, validate the project's pipelines,
# show a DAG, and run a real ML pipeline end to end, every step in its own container.
#   bash scripts/demo.sh [PIPELINE]      (default: breast-cancer)
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline="${1:-breast-cancer}"

python3 -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v -i "running pip as the 'root' user" || true
bash scripts/docker-up.sh
bash scripts/build-images.sh

echo "== sluice validate" >&2
sluice validate pipelines/
echo "== sluice graph $pipeline" >&2
sluice graph "$pipeline"
echo "== sluice run $pipeline" >&2
set +e
sluice run "$pipeline"
status=$?
set -e
latest=$(ls -1 .sluice/runs | tail -n 1)
cat >&2 <<TXT

Where to look next:
  sluice show $latest                  the run's record, from the sluice-results branch
  sluice logs $latest train            one step's log
  sluice runs                          every recorded run, newest first
  sluice run $pipeline --dry-run       what is cached now, and why the rest would run
  .sluice/runs/$latest/                a local copy: manifest.json, logs/, step outputs
  .sluice/artifacts/                   step outputs, stored by sha256
Run it again: every step but the deployment comes from the cache.
TXT
exit "$status"
