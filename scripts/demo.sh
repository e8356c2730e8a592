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
  .sluice/runs/$latest/manifest.json     the run's record: steps, attempts, metrics
  .sluice/runs/$latest/logs/             one log per step attempt
  .sluice/runs/$latest/steps/*/outputs/  what each step wrote to /sluice/outputs
  sluice graph $pipeline --format mermaid
TXT
exit "$status"
