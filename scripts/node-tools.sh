#!/usr/bin/env bash
# Installs the test tools that are not Python packages (tests/node/package.json, pinned by
# package-lock.json): GitHub's own workflow parser (@actions/workflow-parser) and expression
# evaluator (@actions/expressions), esbuild to bundle them for Node 20
# (tests/workflow_validators.py bundles tests/node/validate-workflow.mjs at test time),
# mermaid's own renderer (@mermaid-js/mermaid-cli, driven by Debian's Chromium, not by a
# browser that puppeteer downloads) and real GitHub webhook payloads
# (@octokit/webhooks-examples). Installs Node (Debian's nodejs, npm) and Chromium when absent.
#   bash scripts/node-tools.sh
set -euo pipefail
cd "$(dirname "$0")/../tests/node"
missing=()
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --silent
