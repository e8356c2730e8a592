#!/usr/bin/env bash
# The retraining example end to end, on this machine, through the `sluice` CLI and git.
#
#   bash examples/retraining/scenario.sh [--workdir DIR]
#
# Copies this example into a scratch git repository (DIR, default a new temporary folder,
# kept afterwards), with a bare repository beside it as `origin` so that results are
# pushed as on GitHub, and plays six stages; every outcome is checked, and the script
# exits 1 at the first one that is not what README.md says:
#   1. first run: everything runs, a sweep of four forests among them (`train`, fanned
#      out); `select` keeps the best; no production model yet, so deploy releases it
#   2. re-run: every step comes from the cache; the gate releases nothing (same model)
#   3. a worse model (a one-tree forest, from a workflow_dispatch as the Actions tab
#      sends it, the sweep's lists typed into its form): the gate keeps production
#   4. drifted data arrives: the hourly monitor detects it and starts a retrain, which
#      releases a model trained on the new data; a second signal within the cooldown
#      starts nothing
#   5. a release with a review (require_approval=true): it waits until `sluice approve`
#   then production questions: `sluice show`, `sluice rollback`, `sluice promote`
#   6. a pull request that makes the model worse (a `pull_request` event on its merge
#      commit): a preview run reuses main's cached steps, deploy is skipped "would be
#      held", the comment says so (GitHub's REST API is a loopback stand-in,
#      github_api_stand_in.py), and production does not move
# Set-up first (idempotent, quick once done): a Docker daemon (scripts/docker-up.sh), the
# local images (scripts/build-images.sh) and the Sluice engine image that the drift check
# runs in (scripts/build-engine-image.sh; skipped when SLUICE_ENGINE_IMAGE is set).
# Each command's full output is kept in DIR/logs/; DIR/scenario.json lists the run ids.
set -euo pipefail

example=$(cd "$(dirname "$0")" && pwd)
sluice_root=$(cd "$example/../.." && pwd)
workdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) workdir="${2:?--workdir needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "scenario: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

# ---- output and checks -----------------------------------------------------------------

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  bold=$'\e[1m' green=$'\e[32m' red=$'\e[31m' dim=$'\e[2m' off=$'\e[0m'
else
  bold="" green="" red="" dim="" off=""
fi
started=$SECONDS
stage() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
say() { printf '   %s\n' "$*"; }
ok() { printf '   %s✓%s %s\n' "$green" "$off" "$*"; }
die() {
  printf '   %s✗ %s%s\n' "$red" "$*" "$off"
  [ -n "${last_log:-}" ] && printf '   %sthe command'"'"'s output: %s%s\n' "$dim" "$last_log" "$off"
  exit 1
}
expect() {  # expect WHAT ACTUAL WANTED
  if [ "$2" = "$3" ]; then ok "$1"; else die "$1: expected '$3', got '$2'"; fi
}

# `json FILE PATH...`: the value at each PATH (keys and list indexes joined by "/") in the
# JSON of FILE, one a line: text as it is, "" when absent, anything else as JSON (true, 0.98, {...}).
json() {
  python3 - "$@" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
for path in sys.argv[2:]:
    value = data
    for part in path.split("/") if path else []:
        if isinstance(value, list):
            value = value[int(part)] if part.isdigit() and int(part) < len(value) else None
        else:
            value = value.get(part) if isinstance(value, dict) else None
    print(value if isinstance(value, str) else "" if value is None else json.dumps(value))
PY
}

# `table MANIFEST`: the run and one line per step: its status, and where it came from; a
# fanned-out step's instances under it.
table() {
  python3 - "$1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
took = m.get("duration_s") or 0
print(f"run {m['run_id']} ({m['pipeline']}, trigger {m['trigger']['kind']}): {m['status']} in {took:.1f}s")

shown = [(n, 2) for n, st in m["steps"].items() if not st.get("instance_of")]
shown += [(n, 4) for st in m["steps"].values() for n in st.get("instances") or []]
width = max([indent + len(name) for name, indent in shown] + [16])

def line(name, step, indent):
    note = ""
    if step.get("cached_from"):
        note = f"cached from {step['cached_from']}"
    elif str(step.get("reason") or "").startswith("preview:"):
        note = step["reason"]  # a pull request's preview: the gate's verdict
    elif step["status"] == "skipped":
        note = "its `when` is false"
    elif step.get("instances"):
        n = len(step["instances"])
        note = f"{n} instance{'s' * (n != 1)}"
    elif step.get("attempts"):
        note = f"{step['attempts'][-1].get('duration_s') or 0:.1f}s"
    print(f"{' ' * indent + name:<{width}} {step['status']:<16} {note}".rstrip())

for name, step in m["steps"].items():
    if step.get("instance_of"):
        continue  # shown under its group
    line(name, step, 2)
    for instance in step.get("instances") or []:
        line(instance, m["steps"][instance], 4)
PY
}

# `sweep MANIFEST FIELD`: FIELD of each instance of the fanned-out `train`, one a line.
sweep() {
  local name
  json "$1" steps/train/instances | python3 -c 'import json, sys; print(*json.load(sys.stdin), sep="\n")' \
    | while IFS= read -r name; do json "$1" "steps/$name/$2"; done
}

# `picked MANIFEST`: the instance `select` chose, and whether it has the sweep's highest
# cv_roc_auc (the first of them on a tie), from the run's record.
picked() {
  python3 - "$1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
group, chosen = m["steps"]["train"], m["steps"]["select"]["metrics"]
done = [m["steps"][i] | {"name": i} for i in group["instances"]]
done = [s for s in done if s["status"] in ("succeeded", "cached")]
best = max(done, key=lambda s: s["metrics"]["cv_roc_auc"])
values = best.get("matrix") or {}
ok = (chosen["n_estimators"], chosen["max_depth"], chosen["cv_roc_auc"]) == (
    values.get("n_estimators"), values.get("max_depth"), best["metrics"]["cv_roc_auc"])
print(f"{best['name']} {best['metrics']['cv_roc_auc']} {'best' if ok else 'NOT-THE-BEST'}")
PY
}

# `sluice_to FILE ARGS...`: run `sluice ARGS`; stdout into $workdir/FILE, stderr into
# $workdir/logs/FILE-without-extension.log; the exit code in $rc.
sluice_to() {
  local file=$1
  shift
  last_log="$workdir/logs/${file%.*}.log"
  printf '   %s$ sluice %s%s\n' "$dim" "$*" "$off"
  set +e
  "${sluice[@]}" "$@" >"$workdir/$file" 2>"$last_log"
  rc=$?
  set -e
}

# `production_is RUN`: check, with `sluice show`, that RUN is retrain's production run.
production_is() {
  local shown
  shown=$("${sluice[@]}" show "$1" 2>&1) || die "sluice show $1 failed: $shown"
  if grep -q "^  production of retrain" <<<"$shown"; then
    ok "production is $1 ($2)"
  else
    die "production should be $1 ($2), but sluice show $1 does not say so"
  fi
}

# `runs_of PIPELINE`: how many runs of PIPELINE the results branch has.
runs_of() {
  "${sluice[@]}" runs --pipeline "$1" --limit 1000 --json 2>/dev/null \
    | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))'
}

# ---- set-up ----------------------------------------------------------------------------

stage "Set-up"
if command -v sluice >/dev/null 2>&1; then sluice=(sluice); else sluice=(python3 -m engine); fi
if ! "${sluice[@]}" --version >/dev/null 2>&1; then
  echo "scenario: the sluice command is missing: pip install -e $sluice_root" >&2
  exit 2
fi
bash "$sluice_root/scripts/docker-up.sh"
bash "$sluice_root/scripts/build-images.sh"
if [ -z "${SLUICE_ENGINE_IMAGE:-}" ]; then
  # (without the legacy builder's deprecation notice, which says nothing about this build)
  SLUICE_ENGINE_IMAGE=$(bash "$sluice_root/scripts/build-engine-image.sh" \
    2> >(grep -v -E '^(DEPRECATED|  +Install the buildx|  +https://docs\.docker\.com/go/buildx|$)' >&2))
fi
export SLUICE_ENGINE_IMAGE
say "Docker answers; the drift check will run in the engine image $SLUICE_ENGINE_IMAGE"

if [ -z "$workdir" ]; then
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-retraining.XXXXXX")
elif [ -e "$workdir" ] && [ -n "$(ls -A "$workdir")" ]; then
  echo "scenario: $workdir is not empty; give a new or an empty folder" >&2
  exit 2
fi
mkdir -p "$workdir/logs" "$workdir/events"
workdir=$(cd "$workdir" && pwd)
repo="$workdir/repo"
export NO_COLOR=1  # plain progress lines in the logs
as_user=(-c user.name="Scenario" -c user.email=scenario@example.com)
git init -q --bare "$workdir/origin.git"
mkdir "$repo"
tar -C "$example" --exclude=.sluice --exclude=__pycache__ --exclude=scenario.sh \
  --exclude=github_api_stand_in.py -c . \
  | tar -x -C "$repo"
git -C "$repo" init -q -b main
git -C "$repo" remote add origin "$workdir/origin.git"
git -C "$repo" add -A
git -C "$repo" "${as_user[@]}" commit -q -m "The retraining example"
git -C "$repo" push -q origin main
cd "$repo"
say "a scratch copy of the example: $repo"
say "with a bare repository as its origin: $workdir/origin.git"

# ---- 1. first run ------------------------------------------------------------------------

stage "1. First run: nothing in production yet, so the gate lets the first model through"
sluice_to run1.json run retrain --json
table "$workdir/run1.json" | sed 's/^/   /'
run1=$(json "$workdir/run1.json" run_id)
expect "sluice run exits 0; the run and all seven steps succeeded" \
  "$rc $(json "$workdir/run1.json" status steps/{ingest,validate-data,train,select,evaluate,deploy,notify}/status | paste -sd' ')" \
  "0 succeeded succeeded succeeded succeeded succeeded succeeded succeeded succeeded"
expect "train fanned out: four forests, one per pair of n_estimators_grid x max_depth_grid, all succeeded" \
  "$(sweep "$workdir/run1.json" status | wc -l) $(sweep "$workdir/run1.json" status | sort -u)" \
  "4 succeeded"
read -r chosen1 cv1 verdict1 <<<"$(picked "$workdir/run1.json")"
expect "select chose $chosen1, the sweep's best cross-validated ROC AUC ($cv1)" "$verdict1" best
auc1=$(json "$workdir/run1.json" steps/evaluate/metrics/roc_auc)
say "ROC AUC $auc1 on the holdout; the released model.pkl has sha256" \
  "$(json "$workdir/run1.json" steps/deploy/outputs/model.pkl/sha256 | cut -c1-12)"
production_is "$run1" "the first release"

# ---- 2. re-run -----------------------------------------------------------------------------

stage "2. Re-run: same code, data and params, so every step comes from the cache"
sluice_to run2.json run retrain --json
table "$workdir/run2.json" | sed 's/^/   /'
run2=$(json "$workdir/run2.json" run_id)
expect "the run succeeded" "$(json "$workdir/run2.json" status)" succeeded
expect "ingest, validate-data, the four train instances, select and evaluate are cached from run 1" \
  "$( (json "$workdir/run2.json" steps/{ingest,validate-data,select,evaluate}/cached_from
       sweep "$workdir/run2.json" cached_from) | sort -u)" \
  "$run1"
expect "deploy is skipped: the gate sees the model production already has" \
  "$(json "$workdir/run2.json" steps/deploy/status)" skipped
expect "notify (a finally step, never cached) ran" \
  "$(json "$workdir/run2.json" steps/notify/status)" succeeded
production_is "$run1" "unchanged"

# ---- 3. a worse model ------------------------------------------------------------------

stage "3. A worse model: a one-tree forest, started from the Actions tab (workflow_dispatch)"
# The run form has an input per list param (the sweep's grids): GitHub sends every input.
cat >"$workdir/events/workflow_dispatch.json" <<'JSON'
{
  "inputs": {"pipeline": "retrain", "params": "{}", "n_estimators_grid": "1", "max_depth_grid": "1"},
  "ref": "refs/heads/main",
  "repository": {"full_name": "your-org/retraining", "default_branch": "main"},
  "sender": {"login": "a-teammate"}
}
JSON
GITHUB_STEP_SUMMARY="$workdir/job-summary.md" GITHUB_OUTPUT="$workdir/github-output.txt" \
  sluice_to run3-list.json trigger --event-name workflow_dispatch \
  --event-path "$workdir/events/workflow_dispatch.json" --json
expect "sluice trigger exits 0 (the run succeeded: a closed gate is not a failure)" "$rc" 0
python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))[0], open(sys.argv[2], "w"))' \
  "$workdir/run3-list.json" "$workdir/run3.json"
table "$workdir/run3.json" | sed 's/^/   /'
run3=$(json "$workdir/run3.json" run_id)
auc3=$(json "$workdir/run3.json" steps/evaluate/metrics/roc_auc)
expect "the run was started by workflow_dispatch" \
  "$(json "$workdir/run3.json" trigger/kind)" workflow_dispatch
expect "ingest and validate-data are cached (same data)" \
  "$(json "$workdir/run3.json" steps/ingest/status steps/validate-data/status | paste -sd' ')" \
  "cached cached"
expect "the sweep was one forest, train[n_estimators=1,max_depth=1]; it, select and evaluate ran (new params)" \
  "$(json "$workdir/run3.json" steps/train/instances/0 steps/train/instances/1 \
    steps/{train,select,evaluate}/status "steps/train[n_estimators=1,max_depth=1]/status" \
    | paste -sd' ')" \
  "train[n_estimators=1,max_depth=1]  succeeded succeeded succeeded succeeded"
expect "the new model is worse: ROC AUC $auc3 < $auc1 - max_regression 0.02" \
  "$(python3 -c "print($auc3 < $auc1 - 0.02)")" True
expect "deploy is skipped: the gate kept production" \
  "$(json "$workdir/run3.json" steps/deploy/status)" skipped
expect "its baseline was run 1" "$(json "$workdir/run3.json" baseline_run)" "$run1"
production_is "$run1" "unchanged: the worse model was not released"
say "the job summary GitHub would show: $workdir/job-summary.md"

# ---- 4. drifted data ---------------------------------------------------------------------

stage "4. Drift: the hourly monitor compares the latest batch with the training reference"
# GitHub runs `sluice tick` on a schedule; here each tick is given its time (--now), and the
# cron slot it runs names the day whose batch the monitor checks.
retrains=$(runs_of retrain)
sluice_to tick1.json tick --pipeline drift-monitor --now 2026-11-24T10:05:00Z --json
expect "the 10:00 tick of 2026-11-24 ran the monitor" "$(json "$workdir/tick1.json" 0/pipeline)" \
  drift-monitor
expect "it saw no drift in the batch production learnt from" \
  "$(json "$workdir/tick1.json" 0/status 0/steps/check/metrics/drift_detected | paste -sd' ')" \
  "succeeded false"
expect "so no retrain started" "$(runs_of retrain)" "$retrains"

say "New data arrives: from 2026-11-25 a recalibrated scanner measures the 'worst' size"
say "features one standard deviation higher (data/world.json; committed and pushed)."
cat >data/world.json <<'JSON'
{
  "latest_batch": "2026-11-25",
  "batch_rows": 480,
  "noise": 0.05,
  "drift": {
    "2026-11-25": {"worst radius": 1.0, "worst perimeter": 1.0, "worst area": 1.0}
  }
}
JSON
git "${as_user[@]}" commit -q -am "New data: the 2026-11-25 batch, from a recalibrated scanner"
git push -q origin main

sluice_to tick2.json tick --pipeline drift-monitor --now 2026-11-25T10:05:00Z --json
monitor=$(json "$workdir/tick2.json" 0/run_id)
expect "the 10:00 tick of 2026-11-25 ran the monitor" "$(json "$workdir/tick2.json" 0/status)" \
  succeeded
expect "it detected drift" "$(json "$workdir/tick2.json" 0/steps/check/metrics/drift_detected)" \
  true
say "$(json "$workdir/tick2.json" 0/steps/check/metrics/drifted_features) of" \
  "$(json "$workdir/tick2.json" 0/steps/check/metrics/features) features drifted; drift score" \
  "$(printf %.3f "$(json "$workdir/tick2.json" 0/steps/check/metrics/drift_score)")"
expect "one retrain started" "$(runs_of retrain)" "$((retrains + 1))"
"${sluice[@]}" runs --pipeline retrain --limit 1 --json 2>/dev/null \
  | python3 -c 'import json, sys; json.dump(json.load(sys.stdin)[0], sys.stdout)' \
  >"$workdir/run4.json"
run4=$(json "$workdir/run4.json" run_id)
table "$workdir/run4.json" | sed 's/^/   /'
expect "the retrain was started by drift" "$(json "$workdir/run4.json" trigger/kind)" drift
expect "by this monitor run" "$(json "$workdir/run4.json" trigger/payload/monitor_run)" "$monitor"
expect "the retrain succeeded" "$(json "$workdir/run4.json" status)" succeeded
expect "ingest ran again: data/world.json changed, so its cache key did" \
  "$(json "$workdir/run4.json" steps/ingest/status)" succeeded
expect "the sweep, select and evaluate ran on the new batch" \
  "$(json "$workdir/run4.json" steps/{train,select,evaluate}/status | paste -sd' ')" \
  "succeeded succeeded succeeded"
read -r chosen4 cv4 verdict4 <<<"$(picked "$workdir/run4.json")"
expect "select chose $chosen4, the best of the four ($cv4)" "$verdict4" best
expect "deploy released the retrained model" "$(json "$workdir/run4.json" steps/deploy/status)" \
  succeeded
say "ROC AUC $(json "$workdir/run4.json" steps/evaluate/metrics/roc_auc) on the new batch's holdout"
production_is "$run4" "the model trained on the new data"

sluice_to tick3.json tick --pipeline drift-monitor --now 2026-11-25T11:05:00Z --json
expect "an hour later the monitor still sees drift" \
  "$(json "$workdir/tick3.json" 0/steps/check/metrics/drift_detected)" true
expect "but the 6h cooldown holds: no second retrain" "$(runs_of retrain)" "$((retrains + 1))"
expect "sluice tick says so" \
  "$(grep -c "drift drift-monitor -> retrain: suppressed" "$last_log" || true)" 1
sluice_to signals.json drift signals --pipeline retrain --json
expect "sluice drift signals: the results branch has both, one fired and one suppressed" \
  "$(python3 -c 'import json, sys; print(" ".join(s["decision"] for s in json.load(open(sys.argv[1]))[::-1]))' "$workdir/signals.json")" \
  "fired suppressed"

# ---- 5. a release with a review ----------------------------------------------------------

stage "5. A release with a review: bigger forests, run with require_approval=true"
sluice_to run5.json run retrain -p n_estimators_grid=400 -p require_approval=true --json
table "$workdir/run5.json" | sed 's/^/   /'
run5=$(json "$workdir/run5.json" run_id)
expect "sluice run exits 0: a run waiting for approval is not a failure" "$rc" 0
expect "the gate held, and the run waits before deploy" \
  "$(json "$workdir/run5.json" status steps/deploy/status | paste -sd' ')" \
  "waiting_approval waiting_approval"
production_is "$run4" "unchanged while the release waits"
sluice_to approve.txt approve "$run5" --by a-reviewer
expect "sluice approve $run5 --by a-reviewer: the rest of the run ran" "$rc" 0
sluice_to run5-approved.json show "$run5" --json
expect "deploy released it" \
  "$(json "$workdir/run5-approved.json" status steps/deploy/status | paste -sd' ')" \
  "succeeded succeeded"
expect "the approval is on the record" \
  "$(json "$workdir/run5-approved.json" approvals/0/decision approvals/0/by | paste -sd' ')" \
  "approve a-reviewer"
production_is "$run5" "the reviewed release"

# ---- production questions ----------------------------------------------------------------

stage "Production, answered from the results branch"
say "\$ sluice show $run5"
"${sluice[@]}" show "$run5" 2>&1 | sed -n '1,3p' | sed 's/^/     /'
sluice_to rollback.json rollback retrain --json
expect "sluice rollback retrain: production goes back to the drift-started release" \
  "$(json "$workdir/rollback.json" production previous | paste -sd' ')" "$run4 $run5"
production_is "$run4" "rolled back"
sluice_to promote.json promote "$run5" --json
expect "sluice promote $run5: the reviewed release is production again" \
  "$(json "$workdir/promote.json" production previous | paste -sd' ')" "$run5 $run4"
production_is "$run5" "promoted"
expect "both changes are commits on the results branch" \
  "$(git log --format=%s -2 sluice-results | grep -c -E '^sluice: (promote|rollback)' || true)" 2
expect "and pushed to origin" "$(git rev-parse sluice-results)" \
  "$(git --git-dir "$workdir/origin.git" rev-parse sluice-results)"

# ---- 6. a pull request ---------------------------------------------------------------------

stage "6. A pull request that makes the model worse: previewed and commented on, never released"
say "A teammate opens pull request #7 on a branch: 'faster nightly training', a sweep of"
say "one forest, one tree of depth 1 (pipelines/retrain.yaml). GitHub sends a pull_request"
say "event, and the workflow runs sluice trigger on the pull request's merge commit"
say "(refs/pull/7/merge)."
production_blob=$(git rev-parse sluice-results:production/retrain.json)
base=$(git rev-parse main)
git checkout -q -b faster-training
sed -i -e 's/^\(  n_estimators_grid:\) \[50, 100\]/\1 [1]     /' \
  -e 's/^\(  max_depth_grid:\) \[2, 8\]/\1 [1]   /' pipelines/retrain.yaml
[ "$(grep -c -E '^  (n_estimators|max_depth)_grid: \[1\] ' pipelines/retrain.yaml)" = 2 ] \
  || die "could not edit the params in pipelines/retrain.yaml"
git "${as_user[@]}" commit -q -am "Faster nightly training: one shallow tree"
head=$(git rev-parse HEAD)
git push -q origin faster-training
# what GitHub checks out for a pull_request event: the base tip merged with the head, detached
git checkout -q --detach main
git "${as_user[@]}" merge -q --no-ff -m "Merge $head into $base" faster-training
# The event as GitHub delivers it (only the fields Sluice reads are kept; their shape is
# GitHub's own, as in the webhook examples of its documentation).
cat >"$workdir/events/pull_request.json" <<JSON
{
  "action": "opened",
  "number": 7,
  "pull_request": {
    "number": 7,
    "state": "open",
    "title": "Faster nightly training: one shallow tree",
    "html_url": "https://github.com/your-org/retraining/pull/7",
    "user": {"login": "a-teammate"},
    "head": {
      "label": "your-org:faster-training", "ref": "faster-training", "sha": "$head",
      "repo": {"id": 700001, "full_name": "your-org/retraining"}
    },
    "base": {
      "label": "your-org:main", "ref": "main", "sha": "$base",
      "repo": {"id": 700001, "full_name": "your-org/retraining"}
    }
  },
  "repository": {"id": 700001, "full_name": "your-org/retraining", "default_branch": "main"},
  "sender": {"login": "a-teammate"}
}
JSON
# GitHub's REST API for the comment: a stand-in on loopback (github_api_stand_in.py)
api="$workdir/github-api"
mkdir -p "$api"
python3 "$example/github_api_stand_in.py" "$api" 2>"$workdir/logs/github-api.log" &
api_pid=$!
trap 'kill "$api_pid" 2>/dev/null || true' EXIT
deadline=$((SECONDS + 20))
until [ -s "$api/url" ]; do
  kill -0 "$api_pid" 2>/dev/null || die "the GitHub API stand-in stopped: $workdir/logs/github-api.log"
  [ "$SECONDS" -lt "$deadline" ] || die "the GitHub API stand-in did not start within 20 s"
  sleep 0.05
done
say "the REST API stand-in listens on $(cat "$api/url")"
# (NO_PROXY: a proxy set for this machine must not carry requests for the stand-in)
NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
  GITHUB_TOKEN=any-token GITHUB_REPOSITORY=your-org/retraining GITHUB_API_URL=$(cat "$api/url") \
  GITHUB_STEP_SUMMARY="$workdir/pr-job-summary.md" GITHUB_OUTPUT="$workdir/pr-github-output.txt" \
  sluice_to run6-list.json trigger --event-name pull_request \
  --event-path "$workdir/events/pull_request.json" --json
expect "sluice trigger exits 0 (a held preview is not a failure)" "$rc" 0
expect "it previewed one pipeline: retrain (its file changed)" \
  "$(json "$workdir/run6-list.json" 0/pipeline 1/pipeline | paste -sd' ')" "retrain "
python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))[0], open(sys.argv[2], "w"))' \
  "$workdir/run6-list.json" "$workdir/run6.json"
table "$workdir/run6.json" | sed 's/^/   /'
run6=$(json "$workdir/run6.json" run_id)
expect "a preview of pull request #7 at its head commit" \
  "$(json "$workdir/run6.json" trigger/kind trigger/payload/number trigger/payload/head_sha | paste -sd' ')" \
  "pull_request 7 $head"
expect "ingest and validate-data are cached from main's drift-started run (same data)" \
  "$(json "$workdir/run6.json" steps/{ingest,validate-data}/cached_from | sort -u)" "$run4"
expect "the one-forest sweep, select and evaluate ran (the pull request's params)" \
  "$(json "$workdir/run6.json" steps/train/instances/0 steps/{train,select,evaluate}/status \
    | paste -sd' ')" \
  "train[n_estimators=1,max_depth=1] succeeded succeeded succeeded"
reason=$(json "$workdir/run6.json" steps/deploy/reason)
expect "deploy did not run: skipped, with the gate's verdict" \
  "$(json "$workdir/run6.json" steps/deploy/status) ${reason%%:*}" "skipped preview"
case "$reason" in
  "preview: would be held: "*) ok "the verdict: ${reason#preview: }" ;;
  *) die "deploy's reason should say 'preview: would be held: ...', not '$reason'" ;;
esac
expect "the REST API got one comment, created" "$(grep -c -v '^GET ' "$api/requests.log")" 1
comment=$(ls "$api"/comment-*.md)
expect "the comment starts with its marker and says the model would be held" \
  "$(head -1 "$comment") $(grep -c '\*\*would be held\*\*' "$comment")" \
  "<!-- sluice-preview pipeline=retrain --> 1"
say "what the reviewer reads first (the whole comment: $comment):"
sed -n '2,6p' "$comment" | grep -v '^$' | sed 's/&lt;/</g; s/^/     /'
expect "the job summary has the same report" \
  "$(grep -c 'would be held' "$workdir/pr-job-summary.md" | sed 's/^[1-9][0-9]*$/yes/')" yes
expect "production's record did not move" \
  "$(git rev-parse sluice-results:production/retrain.json)" "$production_blob"
production_is "$run5" "untouched by the pull request"
sluice_to promote-preview.txt promote "$run6"
expect "sluice promote refuses the preview (exit 2)" "$rc" 2
expect "the preview's record is pushed (a same-repository pull request)" \
  "$(git --git-dir "$workdir/origin.git" ls-tree --name-only sluice-results "runs/retrain/$run6")" \
  "runs/retrain/$run6"
kill "$api_pid" 2>/dev/null || true
trap - EXIT
git checkout -q main

cat >"$workdir/scenario.json" <<JSON
{"repo": "$repo", "first": "$run1", "rerun": "$run2", "worse": "$run3",
 "monitor": "$monitor", "drift_retrain": "$run4", "reviewed": "$run5", "production": "$run5",
 "preview": "$run6", "pr_head": "$head", "pr_base": "$base",
 "seconds": $((SECONDS - started))}
JSON

stage "Every outcome was as README.md says, in $((SECONDS - started)) s"
printf '   Where to look next, in %s:\n' "$repo"
next_step() { printf '     %-50s %s\n' "$1" "$2"; }
next_step "sluice runs" "every run, newest first"
next_step "sluice show $run5" "the production run: steps, metrics, outputs"
next_step "sluice logs $run1 select" "the sweep's four forests, ranked"
next_step "sluice logs $run3 evaluate" "the worse model's scores"
next_step "sluice logs $monitor check" "the drift report, feature by feature"
next_step "sluice diff $run5 $run6" "production against the pull request's preview"
next_step "sluice run retrain --dry-run" "what is cached now, and why the rest would run"
next_step "git log --oneline sluice-results" "the record: one commit per change, pushed"
next_step "ls .sluice/runs/$run5/" "a local copy: manifest, logs, outputs"
printf '   The job summary GitHub would show for stage 3: %s\n' "$workdir/job-summary.md"
printf '   The pull request comment of stage 6: %s\n' "$comment"
