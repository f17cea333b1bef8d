#!/usr/bin/env bash
# The logic of wakegate's GitHub Action (action.yml at the repository root):
#   github-action.sh start   install wakegate, enrol with the job's OIDC token,
#                            wake the engine, start the sidecar, export
#                            BUILDKIT_HOST and _EXPERIMENTAL_DAGGER_RUNNER_HOST,
#                            optionally create a buildx builder on it
#   github-action.sh stop    remove the builder, stop the sidecar
# Inputs come as INPUT_* variables, as GitHub passes them to an action:
#   INPUT_GATEWAY, INPUT_CA-URL / INPUT_CA_URL, INPUT_CA-FINGERPRINT /
#   INPUT_CA_FINGERPRINT, INPUT_AUDIENCE, INPUT_VERSION, INPUT_BUILDX.
# It runs anywhere bash does, so tests drive it without GitHub.
set -euo pipefail

die() { echo "::error title=wakegate::$*" >&2; exit 1; }

# input NAME: GitHub keeps dashes in INPUT_ names, which bash cannot expand
# directly; accept underscores too.
input() {
	local name=$1 dashed underscored
	dashed="INPUT_$(echo "$name" | tr '[:lower:]' '[:upper:]')"
	underscored="${dashed//-/_}"
	local v
	v=$(printenv "$dashed" 2>/dev/null || true)
	[ -n "$v" ] || v=$(printenv "$underscored" 2>/dev/null || true)
	printf '%s' "$v"
}

state_dir() { printf '%s' "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/wakegate-${GITHUB_RUN_ID:-local}-${GITHUB_JOB:-job}-$$"; }

# install_wakegate VERSION: prints the path of a wakegate binary.
#   ""      build the action's own source (the ref named in 'uses:')
#   "path"  the wakegate already on $PATH
#   vX.Y.Z  go install github.com/wakegate/wakegate/cmd/wakegate@vX.Y.Z
install_wakegate() {
	local version=$1 dir=$2
	case "$version" in
	path)
		command -v wakegate || die "version: path, but no wakegate on \$PATH"
		;;
	"")
		local src
		src=${GITHUB_ACTION_PATH:-$(cd "$(dirname "$0")/.." && pwd)}
		command -v go >/dev/null || die "building wakegate needs Go: add actions/setup-go before this step, or set 'version'"
		(cd "$src" && go build -o "$dir/wakegate" ./cmd/wakegate) >&2 || die "could not build wakegate from $src"
		printf '%s' "$dir/wakegate"
		;;
	v*)
		command -v go >/dev/null || die "installing wakegate $version needs Go: add actions/setup-go before this step"
		GOBIN=$dir go install "github.com/wakegate/wakegate/cmd/wakegate@$version" >&2 || die "could not install wakegate $version"
		printf '%s' "$dir/wakegate"
		;;
	*)
		die "version '$version': use a release tag such as v1.2.3, 'path', or leave it empty to build the action's own source"
		;;
	esac
}

start() {
	local gateway ca_url ca_fp audience version buildx
	gateway=$(input gateway)
	ca_url=$(input ca-url)
	ca_fp=$(input ca-fingerprint)
	audience=$(input audience)
	version=$(input version)
	buildx=$(input buildx)
	[ -n "$gateway" ] || die "input 'gateway' is required (HOST:PORT of the wakegate gateway)"
	[ -n "$ca_url" ] || die "input 'ca-url' is required (https://HOST:PORT of the gateway's CA API)"
	[ -n "$ca_fp" ] || die "input 'ca-fingerprint' is required (what 'wakegate certs fingerprint' prints)"
	[ -n "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ] || die "this job cannot request an OIDC token: give it 'permissions: id-token: write'"
	case "${buildx:-false}" in true | false) ;; *) die "input 'buildx' must be true or false, not '$buildx'" ;; esac

	local dir
	dir=$(state_dir)
	mkdir -p "$dir"
	chmod 700 "$dir"
	local bin
	bin=$(install_wakegate "$version" "$dir")

	local addr
	addr=$("$bin" connect --oidc github --background \
		--gateway "$gateway" --ca-url "$ca_url" --ca-fingerprint "$ca_fp" \
		--oidc-audience "${audience:-wakegate}" \
		--pid-file "$dir/connect.pid" --log-file "$dir/connect.log")
	[ -n "$addr" ] || die "the sidecar printed no address (log: $dir/connect.log)"

	local builder=""
	if [ "${buildx:-false}" = true ]; then
		builder="wakegate-${GITHUB_RUN_ID:-local}-$$"
		# buildx ignores BUILDKIT_HOST: it needs a builder of its own.
		${WAKEGATE_DOCKER_BUILDX:-docker buildx} create --name "$builder" --driver remote --use "$addr" >&2 ||
			die "could not create the buildx builder on $addr"
		echo "wakegate: buildx builder $builder uses $addr" >&2
	fi

	if [ -n "${GITHUB_STATE:-}" ]; then
		{ echo "dir=$dir"; echo "builder=$builder"; } >>"$GITHUB_STATE"
	fi
	if [ -n "${GITHUB_OUTPUT:-}" ]; then
		{ echo "address=$addr"; echo "builder=$builder"; echo "pid-file=$dir/connect.pid"; } >>"$GITHUB_OUTPUT"
	fi
	echo "$addr"
}

# alive PID: the process runs (an exited one that nobody reaped yet, as
# under a container's minimal init, does not count).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat:0:1}" != Z ]
}

stop() {
	local dir=${STATE_dir:-${WAKEGATE_STATE_DIR:-}} builder=${STATE_builder:-${WAKEGATE_BUILDER:-}}
	[ -n "$dir" ] || { echo "wakegate: nothing to stop (the start step did not run)" >&2; return 0; }
	if [ -n "$builder" ]; then
		${WAKEGATE_DOCKER_BUILDX:-docker buildx} rm "$builder" >&2 || echo "wakegate: could not remove builder $builder" >&2
	fi
	local pidfile=$dir/connect.pid pid
	if [ ! -f "$pidfile" ]; then
		echo "wakegate: the sidecar had already stopped (log: $dir/connect.log)" >&2
		return 0
	fi
	pid=$(cat "$pidfile")
	kill "$pid" 2>/dev/null || true
	# The sidecar drains its connections within 10 s; give it 15.
	for _ in $(seq 150); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		kill -9 "$pid" 2>/dev/null || true
		echo "wakegate: the sidecar (pid $pid) did not stop within 15 s and was killed" >&2
	else
		echo "wakegate: sidecar (pid $pid) stopped" >&2
	fi
	rm -f "$pidfile"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop" ;;
esac
