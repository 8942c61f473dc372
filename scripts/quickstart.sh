#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running VM: installs what
# is missing (system packages through `vireo host setup`, npm packages),
# builds Vireo, then boots a tiny guest and shows output from inside it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "quickstart: Node.js 20 or newer (with npm) is required; found: $(node --version 2>/dev/null || echo none)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart: run as root (sudo bash scripts/quickstart.sh): it installs QEMU with apt" >&2
  exit 1
fi

npm ci --no-audit --no-fund
npm run build
node dist/src/cli/main.js host setup
# So that the second README command, npm test, finds what it needs too.
bash scripts/test-tools.sh
node dist/scripts/quickstart.js
