#!/usr/bin/env bash
# Installs the Node test tools (tests/node/package.json, pinned by package-lock.json): GitHub's
# own workflow parser (@actions/workflow-parser) and expression evaluator (@actions/expressions),
# and esbuild to bundle them for Node 20 (tests/workflow_validators.py bundles
# tests/node/validate-workflow.mjs at test time). Installs Node itself (Debian's nodejs, npm)
# when absent.
#   bash scripts/node-tools.sh
set -euo pipefail
cd "$(dirname "$0")/../tests/node"
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --no-audit --no-fund --silent
