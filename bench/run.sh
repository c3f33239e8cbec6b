#!/usr/bin/env bash
# bench/run.sh: the wrk half of `make bench` (bench/README.md). Installs wrk,
# nginx and haproxy when missing, builds the binaries, then runs the Go
# harness (bench/harness), which does the measuring. Arguments go to the
# harness:
#   bash bench/run.sh -rounds 1 -duration 5s -rows bare,strangler-split
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'bench: %s\n' "$*" >&2; }
source .ci/apt.sh

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[[ -x /usr/sbin/nginx ]] || missing+=(nginx)
[[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
if ((${#missing[@]} > 0)); then
	# The packages would start services on ports 80 and 8080; the harness
	# runs its own.
	apt_install --no-start bench "${missing[@]}"
fi

# bin/strangler and bin/legacyorders (make build), unless the caller points
# the harness at other builds (STRANGLER_BIN, LEGACYORDERS_BIN).
if [[ -z ${STRANGLER_BIN:-} || -z ${LEGACYORDERS_BIN:-} ]]; then
	make -s build >&2
fi
mkdir -p bin/bench
go build -o bin/bench/ ./bench/harness ./bench/bareproxy ./bench/fastproxy
exec bin/bench/harness "$@"
