#!/usr/bin/env bash
# Installs what running engines here needs, from Debian's packages, when it
# is missing: runc (the OCI runtime buildkitd's worker and Dagger's engine
# call) and busybox-static (a static shell copied into build contexts, since
# no image can be pulled); dnsmasq-base, iptables and
# containernetworking-plugins, which Dagger's engine needs at start (see
# docs/dagger.md), and xz-utils to unpack it ('make dagger'); nodejs for the
# tests of the GitHub Action's two JavaScript wrappers; postgresql, whose
# server (initdb and postgres, in /usr/lib/postgresql/VERSION/bin) tests run
# as a throwaway cluster (internal/pgtest), as the postgres user the package
# creates. Engines run as root, so this must too.
set -euo pipefail

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
command -v runc >/dev/null 2>&1 || missing+=(runc)
installed busybox-static || missing+=(busybox-static)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
for p in dnsmasq-base iptables containernetworking-plugins; do
  installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
