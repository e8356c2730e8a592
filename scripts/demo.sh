#!/usr/bin/env bash
# The main job (README.md): set up on a fresh machine, then run the retraining example
# end to end (examples/retraining/scenario.sh): a scratch clone of examples/retraining/
# with a local results branch, file:// artifacts and the locally built step image; a first
# run that releases a model, a cached re-run, a worse model the gate holds back, drifted
# data the hourly monitor catches (it starts a retrain), a release that waits for review,
# and production rolled back and promoted. Every outcome is checked; exit 1 if one is off.
#
#   bash scripts/demo.sh [--workdir DIR]     the retraining scenario (default: a new temp dir)
#   bash scripts/demo.sh PIPELINE            instead: validate pipelines/ and run one of this
#                                            project's own pipelines, e.g. breast-cancer
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v -i "running pip as the 'root' user" || true

if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  exec bash examples/retraining/scenario.sh "$@"
fi

pipeline="$1"
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
