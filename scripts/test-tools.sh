#!/usr/bin/env bash
# Tools only the test suite needs, installed when missing (Debian/Ubuntu):
# iproute2 for the two-host migration tests (network namespaces and veth),
# e2fsprogs for reading guest disks on the host (debugfs), chromium for the
# web UI tests (driven by playwright-core; no browser is ever downloaded),
# etcd-server for the cluster tests (a real 3-member etcd in namespaces).
# Needs root when something is missing.
set -euo pipefail
missing=""
for pkg in iproute2 e2fsprogs chromium etcd-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -o DPkg::Lock::Timeout=300
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -o DPkg::Lock::Timeout=300 $missing
fi
