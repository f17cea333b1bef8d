#!/usr/bin/env bash
# Installs what running BuildKit engines here needs, from Debian's packages,
# when it is missing: runc (the OCI runtime buildkitd's worker calls) and
# busybox-static (a static shell copied into build contexts, since no image
# can be pulled); nodejs for the tests of the GitHub Action's two JavaScript
# wrappers. Engines run as root, so this must too.
set -euo pipefail

missing=()
command -v runc >/dev/null 2>&1 || missing+=(runc)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || missing+=(busybox-static)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
